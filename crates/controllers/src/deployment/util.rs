//! Pure Deployment helpers (upstream's pkg/controller/deployment/util): template hash,
//! fenceposts, revision and replica annotations, conditions, proportions.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The label (and RS name suffix) that tells the ReplicaSets of a Deployment apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The revision of a ReplicaSet (and of the Deployment: its newest).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had before a rollback brought it back.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Upstream's limit on the revision-history annotation.
pub const MAX_REV_HISTORY_LENGTH_IN_CHARS: usize = 2000;

/// Condition reasons, as upstream spells them.
pub mod reason {
    /// A new ReplicaSet was created.
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    /// The controller found the ReplicaSet of the current template.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// The rollout is progressing.
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    /// The rollout finished.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// The rollout did not progress within progressDeadlineSeconds.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// The Deployment is paused.
    pub const PAUSED: &str = "DeploymentPaused";
    /// The Deployment was resumed.
    pub const RESUMED: &str = "DeploymentResumed";
    /// Creating the new ReplicaSet failed.
    pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
    /// Enough replicas are available.
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Too few replicas are available.
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// Annotations never copied from a Deployment to its ReplicaSets.
const ANNOTATIONS_TO_SKIP: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// `spec.replicas` (default 1).
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `spec.replicas` of a ReplicaSet (default 1).
pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `status.availableReplicas` of a ReplicaSet.
pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// `status.replicas` of a ReplicaSet.
pub fn rs_actual(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

/// Whether the strategy is RollingUpdate (the default).
pub fn is_rolling_update(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// Upstream's GetScaledValueFromIntOrPercent.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let p: i64 = s
                .strip_suffix('%')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let scaled = p * total as i64;
            Ok(if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            } as i32)
        }
    }
}

/// Upstream's ResolveFenceposts: (maxSurge, maxUnavailable) for `desired` replicas, never
/// both zero.
pub fn resolve_fenceposts(d: &Deployment) -> (i32, i32) {
    let desired = replicas(d);
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let pct25 = IntOrString::String("25%".into());
    let surge_v = ru
        .map(|r| r.max_surge.clone().unwrap_or(IntOrString::Int(0)))
        .unwrap_or(pct25.clone());
    let unavail_v = ru
        .map(|r| r.max_unavailable.clone().unwrap_or(IntOrString::Int(0)))
        .unwrap_or(pct25);
    let surge = scaled_value(&surge_v, desired, true).unwrap_or(0);
    let mut unavailable = scaled_value(&unavail_v, desired, false).unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// Upstream's MaxSurge.
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    resolve_fenceposts(d).0
}

/// Upstream's MaxUnavailable (never more than the replicas).
pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling_update(d) || replicas(d) == 0 {
        return 0;
    }
    resolve_fenceposts(d).1.min(replicas(d))
}

/// Upstream's rand.SafeEncodeString: maps bytes onto consonants and digits that cannot
/// spell words.
pub fn safe_encode_string(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// FNV-1a, 32 bits.
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in data {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Upstream's ComputeHash: FNV-1a over a deterministic rendering of the template, plus the
/// collision count, encoded safely. (Upstream renders the Go struct with spew; we render
/// canonical JSON, so values differ from upstream's but have the same properties.)
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let rendered = serde_json::to_vec(&canonical(
        serde_json::to_value(template).unwrap_or_default(),
    ))
    .unwrap_or_default();
    let mut data = rendered;
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(c as u32).to_le_bytes());
        data.extend_from_slice(&bytes);
    }
    safe_encode_string(&fnv32a(&data).to_string())
}

fn canonical(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let sorted: BTreeMap<String, serde_json::Value> =
                m.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(canonical).collect())
        }
        v => v,
    }
}

/// Upstream's EqualIgnoreHash: templates equal except for the pod-template-hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(m) = t.metadata.as_mut() {
            if let Some(l) = m.labels.as_mut() {
                l.remove(POD_TEMPLATE_HASH);
                if l.is_empty() {
                    m.labels = None;
                }
            }
        }
        canonical(serde_json::to_value(t).unwrap_or_default())
    };
    strip(a) == strip(b)
}

/// The revision annotation as a number (0 when absent or invalid).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The highest revision among `rss`.
pub fn max_revision<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    rss.into_iter().map(revision).max().unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Upstream's ReplicaSetsByCreationTimestamp: older first, then by name.
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    created(a)
        .cmp(&created(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Upstream's ReplicaSetsBySizeOlder: larger first, older first among equals.
pub fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(a, b))
}

/// Upstream's ReplicaSetsBySizeNewer: larger first, newer first among equals.
pub fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(b, a))
}

/// Upstream's ReplicaSetsByRevision: lower revision first.
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    revision(a)
        .cmp(&revision(b))
        .then_with(|| by_creation(a, b))
}

fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// Sets the desired- and max-replicas annotations; whether anything changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(Default::default);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.to_string(), v);
            changed = true;
        }
    }
    changed
}

/// Upstream's SetNewReplicaSetAnnotations: copies the Deployment's annotations, bumps the
/// revision (remembering the old one in revision-history when a rollback reuses this
/// ReplicaSet), and sets the replica annotations on a ReplicaSet about to be created.
pub fn set_new_replica_set_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    let a = rs.metadata.annotations.get_or_insert_with(Default::default);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if ANNOTATIONS_TO_SKIP.contains(&k.as_str()) || a.get(k) == Some(v) {
            continue;
        }
        a.insert(k.clone(), v.clone());
        changed = true;
    }
    let old_revision = a.get(REVISION).cloned().unwrap_or_default();
    let old_int = if old_revision.is_empty() {
        0
    } else {
        match old_revision.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return false,
        }
    };
    if old_int < new_revision {
        a.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if !old_revision.is_empty() {
            let history = a.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if history.is_empty() {
                a.insert(REVISION_HISTORY.into(), old_revision);
            } else {
                let mut old: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old_revision.len() + 1;
                let mut start = 0;
                while total > MAX_REV_HISTORY_LENGTH_IN_CHARS && start < old.len() {
                    total -= old[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REV_HISTORY_LENGTH_IN_CHARS {
                    old = old.split_off(start);
                    old.push(&old_revision);
                    let joined = old.join(",");
                    a.insert(REVISION_HISTORY.into(), joined);
                }
            }
        }
    }
    if !exists && set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

/// Upstream's IsSaturated: the ReplicaSet runs the Deployment's full size, all available.
pub fn is_saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    let r = replicas(d);
    int_annotation(rs, DESIRED_REPLICAS) == Some(r) && rs_replicas(rs) == r && rs_available(rs) == r
}

/// Upstream's GetProportion: this ReplicaSet's share of `to_add` replicas.
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

fn replica_set_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    if replicas(d) == 0 {
        return -rs_replicas(rs);
    }
    let deployment_replicas = replicas(d) + max_surge(d);
    let annotated = int_annotation(rs, MAX_REPLICAS)
        .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated == 0 {
        return 0;
    }
    let size = (rs_replicas(rs) as f64 * deployment_replicas as f64) / annotated as f64;
    size.round() as i32 - rs_replicas(rs)
}

/// Upstream's NewRSNewReplicas: how big the new ReplicaSet may be now.
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    if !is_rolling_update(d) {
        return replicas(d);
    }
    let current: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let max_total = replicas(d) + max_surge(d);
    if current >= max_total {
        return rs_replicas(new_rs);
    }
    let up = (max_total - current).min(replicas(d) - rs_replicas(new_rs));
    rs_replicas(new_rs) + up
}

/// A condition stamped now.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> DeploymentCondition {
    let now = Time(Timestamp::now());
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// The condition of `type_`.
pub fn get_condition<'a>(
    status: &'a DeploymentStatus,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Upstream's SetDeploymentCondition: no-op when status and reason are unchanged; keeps the
/// transition time when only the reason changed.
pub fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(cur) = get_condition(status, &cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(status, &cond.type_.clone());
    status.conditions.get_or_insert_with(Vec::new).push(cond);
}

/// Removes the condition of `type_`.
pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_ != type_);
        if c.is_empty() {
            status.conditions = None;
        }
    }
}

/// `spec.progressDeadlineSeconds` when set and not "infinite".
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

fn n(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// Upstream's DeploymentComplete.
pub fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = replicas(d);
    n(s.updated_replicas) == r
        && n(s.replicas) == r
        && n(s.available_replicas) == r
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Upstream's DeploymentProgressing: more updated, fewer old, more ready or available.
pub fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// Upstream's DeploymentTimedOut.
pub fn deployment_timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = get_condition(s, "Progressing") else {
        return false;
    };
    match c.reason.as_deref() {
        Some(reason::NEW_RS_AVAILABLE) => false,
        Some(reason::TIMED_OUT) => true,
        _ => match &c.last_update_time {
            Some(t) => t.0 + SignedDuration::from_secs(deadline as i64) < now,
            None => false,
        },
    }
}

/// A zero count is omitted on the wire (`omitempty`), so it is `None` here.
pub fn nz(v: i32) -> Option<i32> {
    (v != 0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};

    fn d(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(resolve_fenceposts(&d(10, pct("25%"), pct("25%"))), (3, 2));
        assert_eq!(resolve_fenceposts(&d(1, pct("25%"), pct("25%"))), (1, 0));
        assert_eq!(
            resolve_fenceposts(&d(3, IntOrString::Int(0), pct("10%"))),
            (0, 1)
        );
        assert_eq!(
            max_unavailable(&d(2, IntOrString::Int(0), IntOrString::Int(5))),
            2
        );
    }

    #[test]
    fn hash_is_stable_safe_and_changes_with_collisions() {
        let t = PodTemplateSpec::default();
        let h = compute_hash(&t, None);
        assert_eq!(h, compute_hash(&t, None));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_ne!(h, compute_hash(&t, Some(1)));
        assert_eq!(safe_encode_string("0123"), "4567");
        assert_eq!(fnv32a(b"a"), 0xe40c292c);
    }

    #[test]
    fn rollback_keeps_revision_history() {
        let dep = d(3, IntOrString::Int(1), IntOrString::Int(0));
        let mut rs = ReplicaSet::default();
        rs.metadata.annotations = Some([(REVISION.to_string(), "1".to_string())].into());
        assert!(set_new_replica_set_annotations(&dep, &mut rs, 3, true));
        let a = rs.metadata.annotations.clone().unwrap();
        assert_eq!(
            (a[REVISION].as_str(), a[REVISION_HISTORY].as_str()),
            ("3", "1")
        );
        assert!(set_new_replica_set_annotations(&dep, &mut rs, 5, true));
        assert_eq!(rs.metadata.annotations.unwrap()[REVISION_HISTORY], "1,3");
    }

    #[test]
    fn conditions_keep_transition_time_when_status_unchanged() {
        let mut s = DeploymentStatus::default();
        let mut c = new_condition("Progressing", "True", reason::RS_UPDATED, "x".into());
        c.last_transition_time = Some(Time(Timestamp::UNIX_EPOCH));
        set_condition(&mut s, c);
        set_condition(
            &mut s,
            new_condition("Progressing", "True", reason::NEW_RS_AVAILABLE, "y".into()),
        );
        let cur = get_condition(&s, "Progressing").unwrap();
        assert_eq!(cur.reason.as_deref(), Some(reason::NEW_RS_AVAILABLE));
        assert_eq!(cur.last_transition_time, Some(Time(Timestamp::UNIX_EPOCH)));
    }
}
