//! The pod lifecycle event generator: one shared relist of the runtime's sandboxes and
//! containers (containerd 1.6 has no container events), as upstream's PLEG. Pod workers read
//! their pod's part of the latest relist instead of listing the runtime themselves, and are
//! woken when their pod's part changes. A worker that has just changed the runtime lists its
//! own pod instead, unless a relist started after its change already exists: waiting for the
//! next shared relist would delay every pod of a burst behind everyone else's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_cri::v1 as cri;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::runtime::Runtime;

/// The label CRI objects of a pod carry its UID under.
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";

/// How often the runtime is relisted when nobody asks sooner.
pub const PERIOD: Duration = Duration::from_secs(1);

/// One relist of the runtime.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// When the relist started: it reflects every runtime change finished before this.
    pub started: Option<Instant>,
    pub sandboxes: Vec<cri::PodSandbox>,
    pub containers: Vec<cri::Container>,
}

impl Snapshot {
    /// The sandboxes and containers of the pod with this UID.
    pub fn of_pod(&self, uid: &str) -> (Vec<cri::PodSandbox>, Vec<cri::Container>) {
        let mine = |l: &HashMap<String, String>| l.get(LABEL_POD_UID).is_some_and(|u| u == uid);
        (
            self.sandboxes
                .iter()
                .filter(|s| mine(&s.labels))
                .cloned()
                .collect(),
            self.containers
                .iter()
                .filter(|c| mine(&c.labels))
                .cloned()
                .collect(),
        )
    }

    /// Per pod UID, what identifies its runtime state (IDs and states, sorted), to tell which
    /// pods changed between two relists.
    fn fingerprints(&self) -> HashMap<&str, Vec<(&str, i32)>> {
        let mut out: HashMap<&str, Vec<(&str, i32)>> = HashMap::new();
        for s in &self.sandboxes {
            if let Some(u) = s.labels.get(LABEL_POD_UID) {
                out.entry(u).or_default().push((&s.id, s.state));
            }
        }
        for c in &self.containers {
            if let Some(u) = c.labels.get(LABEL_POD_UID) {
                // Containers and sandboxes have distinct IDs; offset states so that they
                // cannot collide either.
                out.entry(u).or_default().push((&c.id, 100 + c.state));
            }
        }
        for v in out.values_mut() {
            v.sort_unstable();
        }
        out
    }
}

/// UIDs whose runtime state differs between two relists.
fn changed(old: &Snapshot, new: &Snapshot) -> Vec<String> {
    let (a, b) = (old.fingerprints(), new.fingerprints());
    let mut out: Vec<String> = a
        .iter()
        .filter(|(u, f)| b.get(*u) != Some(*f))
        .map(|(u, _)| u.to_string())
        .collect();
    out.extend(
        b.keys()
            .filter(|u| !a.contains_key(*u))
            .map(|u| u.to_string()),
    );
    out
}

/// The shared relister.
pub struct Pleg {
    runtime: Runtime,
    latest: Mutex<Arc<Snapshot>>,
    /// Held while relisting, so that relists never overlap and waiters share one.
    relisting: tokio::sync::Mutex<()>,
    watchers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Pleg {
    pub fn new(runtime: Runtime) -> Pleg {
        Pleg {
            runtime,
            latest: Mutex::new(Arc::new(Snapshot::default())),
            relisting: tokio::sync::Mutex::new(()),
            watchers: Mutex::new(HashMap::new()),
        }
    }

    /// The latest relist if it started at or after `not_before`.
    pub fn latest_since(&self, not_before: Instant) -> Option<Arc<Snapshot>> {
        let l = self.latest.lock().expect("pleg snapshot").clone();
        l.started.is_some_and(|s| s >= not_before).then_some(l)
    }

    /// A relist started at or after `not_before`: the latest one if it is recent enough,
    /// otherwise a new one (shared with everyone asking meanwhile).
    pub async fn snapshot(&self, not_before: Instant) -> Result<Arc<Snapshot>> {
        if let Some(s) = self.latest_since(not_before) {
            return Ok(s);
        }
        let _g = self.relisting.lock().await;
        if let Some(s) = self.latest_since(not_before) {
            return Ok(s);
        }
        self.relist().await
    }

    async fn relist(&self) -> Result<Arc<Snapshot>> {
        let started = Instant::now();
        let mut rt = self.runtime.cri();
        let sandboxes = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .context("list pod sandboxes")?
            .into_inner()
            .items;
        let containers = rt
            .list_containers(cri::ListContainersRequest::default())
            .await
            .context("list containers")?
            .into_inner()
            .containers;
        let new = Arc::new(Snapshot {
            started: Some(started),
            sandboxes,
            containers,
        });
        let old = std::mem::replace(
            &mut *self.latest.lock().expect("pleg snapshot"),
            new.clone(),
        );
        let uids = changed(&old, &new);
        if !uids.is_empty() {
            let w = self.watchers.lock().expect("pleg watchers");
            for u in uids {
                if let Some(n) = w.get(&u) {
                    n.notify_one();
                }
            }
        }
        Ok(new)
    }

    /// Wakes `notify` whenever a relist finds the runtime state of pod `uid` changed.
    pub fn watch(&self, uid: &str, notify: Arc<Notify>) {
        self.watchers
            .lock()
            .expect("pleg watchers")
            .insert(uid.to_string(), notify);
    }

    /// Stops waking for pod `uid`.
    pub fn unwatch(&self, uid: &str) {
        self.watchers.lock().expect("pleg watchers").remove(uid);
    }

    /// Relists every [`PERIOD`] (unless a worker's request just did) while some pod is
    /// watched, until aborted.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Nobody to tell about changes: with no pods there is nothing to relist for.
            if self.watchers.lock().expect("pleg watchers").is_empty() {
                continue;
            }
            // A relist that started within the last half period is as good as a new one.
            let now = Instant::now();
            let not_before = now.checked_sub(PERIOD / 2).unwrap_or(now);
            if let Err(e) = self.snapshot(not_before).await {
                tracing::debug!("relisting the runtime: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(id: &str, uid: &str, state: i32) -> cri::PodSandbox {
        cri::PodSandbox {
            id: id.into(),
            state,
            labels: HashMap::from([(LABEL_POD_UID.to_string(), uid.to_string())]),
            ..Default::default()
        }
    }

    fn container(id: &str, uid: &str, state: i32) -> cri::Container {
        cri::Container {
            id: id.into(),
            state,
            labels: HashMap::from([(LABEL_POD_UID.to_string(), uid.to_string())]),
            ..Default::default()
        }
    }

    #[test]
    fn changes_are_found_per_pod() {
        let old = Snapshot {
            started: None,
            sandboxes: vec![sandbox("s1", "a", 0), sandbox("s2", "b", 0)],
            containers: vec![container("c1", "a", 1), container("c2", "b", 1)],
        };
        let new = Snapshot {
            started: None,
            sandboxes: vec![
                sandbox("s1", "a", 0),
                sandbox("s2", "b", 0),
                sandbox("s3", "c", 0),
            ],
            // a's container exited, b's is unchanged, c is new.
            containers: vec![container("c2", "b", 1), container("c1", "a", 2)],
        };
        let mut c = changed(&old, &new);
        c.sort();
        assert_eq!(c, vec!["a".to_string(), "c".to_string()]);
        // A pod whose objects all vanished changed too.
        let mut gone = changed(&new, &Snapshot::default());
        gone.sort();
        assert_eq!(gone, vec!["a", "b", "c"]);
        assert!(changed(&new, &new).is_empty());
    }

    #[test]
    fn of_pod_selects_by_uid_label() {
        let s = Snapshot {
            started: None,
            sandboxes: vec![sandbox("s1", "a", 0), sandbox("s2", "b", 0)],
            containers: vec![container("c1", "a", 1), container("c2", "b", 1)],
        };
        let (sb, cs) = s.of_pod("b");
        assert_eq!(sb.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["s2"]);
        assert_eq!(cs.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c2"]);
    }
}
