//! Expectations (upstream's UIDTrackingControllerExpectations): after a controller creates
//! or deletes pods it records how many changes it expects its cache to show, and does not
//! act on that controller's key again until the cache has caught up (or 5 minutes passed).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long unobserved expectations block a controller (upstream's ExpectationsTimeout).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone)]
struct Expectation {
    add: i64,
    del: i64,
    at: Instant,
    /// Keys of the pods whose deletion is awaited: a deletion of any other pod is not ours.
    deleting: HashSet<String>,
}

/// Expected creations and deletions per controller key.
pub struct Expectations {
    ttl: Duration,
    map: Mutex<HashMap<String, Expectation>>,
}

impl Default for Expectations {
    fn default() -> Self {
        Expectations::with_ttl(EXPECTATIONS_TIMEOUT)
    }
}

impl Expectations {
    /// Expectations that expire after `ttl` instead of 5 minutes (tests).
    pub fn with_ttl(ttl: Duration) -> Expectations {
        Expectations {
            ttl,
            map: Mutex::default(),
        }
    }

    /// Whether the controller `key` may sync: nothing recorded, all observed, or expired.
    pub fn satisfied(&self, key: &str) -> bool {
        match self.map.lock().unwrap().get(key) {
            None => true,
            Some(e) => (e.add <= 0 && e.del <= 0) || e.at.elapsed() > self.ttl,
        }
    }

    /// Expects `adds` creations, replacing what was recorded.
    pub fn expect_creations(&self, key: &str, adds: usize) {
        self.set(key, adds as i64, HashSet::new());
    }

    /// Expects the deletion of the pods with keys `pod_keys`, replacing what was recorded.
    pub fn expect_deletions(&self, key: &str, pod_keys: Vec<String>) {
        let set: HashSet<String> = pod_keys.into_iter().collect();
        self.set(key, 0, set);
    }

    fn set(&self, key: &str, add: i64, deleting: HashSet<String>) {
        let e = Expectation {
            add,
            del: deleting.len() as i64,
            at: Instant::now(),
            deleting,
        };
        self.map.lock().unwrap().insert(key.to_string(), e);
    }

    /// One expected creation was seen (or will never happen: the create failed).
    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.map.lock().unwrap().get_mut(key) {
            e.add -= 1;
        }
    }

    /// The pod `pod_key` is gone (or its delete failed); counts only awaited pods.
    pub fn deletion_observed(&self, key: &str, pod_key: &str) {
        if let Some(e) = self.map.lock().unwrap().get_mut(key) {
            if e.deleting.remove(pod_key) {
                e.del -= 1;
            }
        }
    }

    /// Forgets `key` (its controller was deleted).
    pub fn delete(&self, key: &str) {
        self.map.lock().unwrap().remove(key);
    }

    /// Outstanding (creations, deletions) for `key`, if recorded.
    pub fn get(&self, key: &str) -> Option<(i64, i64)> {
        self.map.lock().unwrap().get(key).map(|e| (e.add, e.del))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satisfied_once_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 2);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
    }

    #[test]
    fn deletions_count_only_awaited_pods() {
        let e = Expectations::default();
        e.expect_deletions("ns/rs", vec!["ns/a".into(), "ns/b".into()]);
        e.deletion_observed("ns/rs", "ns/other");
        e.deletion_observed("ns/rs", "ns/a");
        e.deletion_observed("ns/rs", "ns/a");
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "ns/b");
        assert!(e.satisfied("ns/rs"));
    }

    #[test]
    fn expire_after_ttl() {
        let e = Expectations::with_ttl(Duration::ZERO);
        e.expect_creations("k", 5);
        std::thread::sleep(Duration::from_millis(2));
        assert!(e.satisfied("k"));
    }
}
