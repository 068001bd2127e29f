//! Event expiry: upstream stores core events with an etcd lease of `--event-ttl` (1 hour); the
//! datastore has no leases, so the API server deletes expired events itself.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::ApiServer;

/// When an event was last touched, as upstream's TTL counts from its last write.
fn last_write(ev: &Value) -> Option<DateTime<Utc>> {
    let m = &ev["metadata"];
    let candidates = [
        ev["lastTimestamp"].as_str(),
        ev["eventTime"].as_str(),
        ev["series"]["lastObservedTime"].as_str(),
        m["creationTimestamp"].as_str(),
    ];
    candidates
        .into_iter()
        .flatten()
        .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .max()
}

/// Deletes events older than `ttl` every `every`, until the server is dropped.
pub fn spawn(server: &ApiServer, ttl: Duration, every: Duration) {
    let weak_cache = std::sync::Arc::downgrade(&server.cache);
    let store = server.store.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Some(cache) = weak_cache.upgrade() else {
                return;
            };
            let (_, events) = cache.list("/registry/events/");
            drop(cache);
            let now = Utc::now();
            for e in events {
                let Ok(v) = serde_json::from_slice::<Value>(&e.bytes) else {
                    continue;
                };
                let Some(at) = last_write(&v) else { continue };
                let age = (now - at).to_std().unwrap_or_default();
                if age > ttl {
                    // Compare-and-swap on the revision seen: an event updated since stays.
                    let _ = store.delete(&e.key, e.revision).await;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn last_write_takes_the_latest_timestamp() {
        let ev = json!({
            "metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"},
            "lastTimestamp": "2024-01-01T02:00:00Z",
        });
        assert_eq!(
            last_write(&ev).unwrap().to_rfc3339(),
            "2024-01-01T02:00:00+00:00"
        );
        assert!(last_write(&json!({"metadata": {}})).is_none());
    }
}
