//! Pure pieces of pod status: phase, QoS class, conditions and the crash-loop backoff.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Upstream's crash-loop backoff (`flowcontrol.Backoff` as the kubelet uses it): the first
/// restart is immediate, then 10 s doubling up to 5 min; an entry untouched for twice the
/// maximum starts over.
#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<String, (Duration, SystemTime)>,
}

/// The kubelet's initial crash-loop delay.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// The kubelet's maximum crash-loop delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

impl Backoff {
    /// Whether a container that finished at `finished` must still wait; returns the delay
    /// remaining and the current backoff.
    pub fn in_backoff(
        &self,
        key: &str,
        finished: SystemTime,
        now: SystemTime,
    ) -> Option<(Duration, Duration)> {
        let (backoff, last) = self.entries.get(key)?;
        if finished.duration_since(*last).unwrap_or_default() > 2 * BACKOFF_MAX {
            return None;
        }
        let since = now.duration_since(finished).unwrap_or_default();
        (since < *backoff).then(|| (*backoff - since, *backoff))
    }

    /// Records a restart at `now`, growing the delay for the next one.
    pub fn next(&mut self, key: &str, now: SystemTime) {
        let e = self
            .entries
            .entry(key.to_string())
            .or_insert((Duration::ZERO, now));
        let expired = now.duration_since(e.1).unwrap_or_default() > 2 * BACKOFF_MAX;
        e.0 = if e.0.is_zero() || expired {
            BACKOFF_INITIAL
        } else {
            (e.0 * 2).min(BACKOFF_MAX)
        };
        e.1 = now;
    }
}

fn has(
    map: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
    k: &str,
) -> Option<String> {
    map.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
}

/// The pod's QoS class (Guaranteed, Burstable, BestEffort) as upstream computes it from cpu and
/// memory requests and limits of all (init) containers.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let r = c.resources.as_ref();
        let req = r.map(|r| r.requests.clone()).unwrap_or_default();
        let lim = r.map(|r| r.limits.clone()).unwrap_or_default();
        for res in ["cpu", "memory"] {
            let (q, l) = (has(&req, res), has(&lim, res));
            if q.as_deref().is_some_and(|v| !is_zero(v))
                || l.as_deref().is_some_and(|v| !is_zero(v))
            {
                any = true;
            }
            match (q, l) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if !same_quantity(&q, &l) => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn is_zero(q: &str) -> bool {
    skiff_api::validation::parse_quantity(q).is_ok_and(|q| q.nanos == 0)
}

fn same_quantity(a: &str, b: &str) -> bool {
    match (
        skiff_api::validation::parse_quantity(a),
        skiff_api::validation::parse_quantity(b),
    ) {
        (Ok(a), Ok(b)) => a.nanos == b.nanos,
        _ => a == b,
    }
}

/// Upstream's `getPhase` for a pod whose init containers are done (or `initialized` false).
pub fn pod_phase(
    spec: &PodSpec,
    statuses: &[ContainerStatus],
    initialized: bool,
    init_failed: bool,
) -> &'static str {
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if init_failed {
        return "Failed";
    }
    if !initialized {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded, mut unknown) = (0, 0, 0, 0, 0);
    for c in &spec.containers {
        match statuses.iter().find(|s| s.name == c.name) {
            None => unknown += 1,
            Some(s) => {
                let st = s.state.as_ref();
                if st.and_then(|s| s.running.as_ref()).is_some() {
                    running += 1;
                } else if let Some(t) = st.and_then(|s| s.terminated.as_ref()) {
                    stopped += 1;
                    if t.exit_code == 0 {
                        succeeded += 1;
                    }
                } else if s
                    .last_state
                    .as_ref()
                    .and_then(|l| l.terminated.as_ref())
                    .is_some()
                {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    if waiting > 0 || unknown > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        if policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

/// Builds a condition, keeping `lastTransitionTime` from `old` when the status is unchanged.
pub fn condition(
    old: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let prev = old.iter().find(|c| c.type_ == type_);
    let time = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(Time(k8s_openapi::jiff::Timestamp::now())),
    };
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: if ok { None } else { reason.map(Into::into) },
        message: if ok { None } else { message },
        last_transition_time: time,
        last_probe_time: None,
    }
}

/// The `pod_<ns>(uid)`-style name the kubelet uses in messages: `name_namespace(uid)`.
pub fn pod_full_name(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let mut b = Backoff::default();
        // No entry: the first restart is immediate.
        assert!(b.in_backoff("c", at(0), at(0)).is_none());
        b.next("c", at(0));
        assert_eq!(
            b.in_backoff("c", at(1), at(2)),
            Some((Duration::from_secs(9), BACKOFF_INITIAL))
        );
        assert!(b.in_backoff("c", at(1), at(11)).is_none());
        let mut t = 11;
        let mut seen = vec![];
        for _ in 0..7 {
            b.next("c", at(t));
            let (_, d) = b.in_backoff("c", at(t), at(t)).unwrap();
            seen.push(d.as_secs());
            t += d.as_secs();
        }
        assert_eq!(seen, vec![20, 40, 80, 160, 300, 300, 300]);
        // Quiet for more than 10 minutes: starts over.
        b.next("c", at(t + 601));
        assert_eq!(
            b.in_backoff("c", at(t + 601), at(t + 601)).unwrap().1,
            BACKOFF_INITIAL
        );
    }

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn qos_classes() {
        let be = spec(json!({"containers": [{"name": "a"}]}));
        assert_eq!(qos_class(&be), "BestEffort");
        let g = spec(json!({"containers": [{"name": "a", "resources": {
            "limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m", "memory": "1Gi"}}}]}));
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = spec(
            json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]}),
        );
        assert_eq!(qos_class(&b), "Burstable");
    }

    fn status(name: &str, state: serde_json::Value, last: serde_json::Value) -> ContainerStatus {
        serde_json::from_value(
            json!({"name": name, "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": state, "lastState": last}),
        )
        .unwrap()
    }

    #[test]
    fn phases() {
        let s =
            spec(json!({"restartPolicy": "Never", "containers": [{"name": "a"}, {"name": "b"}]}));
        let run = json!({"running": {}});
        let ok = json!({"terminated": {"exitCode": 0}});
        let bad = json!({"terminated": {"exitCode": 1}});
        assert_eq!(pod_phase(&s, &[], true, false), "Pending");
        assert_eq!(pod_phase(&s, &[], false, false), "Pending");
        assert_eq!(pod_phase(&s, &[], false, true), "Failed");
        assert_eq!(
            pod_phase(
                &s,
                &[
                    status("a", run.clone(), json!({})),
                    status("b", ok.clone(), json!({}))
                ],
                true,
                false
            ),
            "Running"
        );
        assert_eq!(
            pod_phase(
                &s,
                &[
                    status("a", ok.clone(), json!({})),
                    status("b", ok.clone(), json!({}))
                ],
                true,
                false
            ),
            "Succeeded"
        );
        assert_eq!(
            pod_phase(
                &s,
                &[
                    status("a", ok.clone(), json!({})),
                    status("b", bad.clone(), json!({}))
                ],
                true,
                false
            ),
            "Failed"
        );
        let always = spec(json!({"containers": [{"name": "a"}]}));
        // Waiting in CrashLoopBackOff after a termination counts as stopped: still Running.
        assert_eq!(
            pod_phase(
                &always,
                &[status(
                    "a",
                    json!({"waiting": {"reason": "CrashLoopBackOff"}}),
                    bad
                )],
                true,
                false
            ),
            "Running"
        );
    }
}
