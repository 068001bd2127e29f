//! HorizontalPodAutoscaler arithmetic (upstream's pkg/controller/podautoscaler), as pure
//! functions: per-metric replica proposals with tolerance and the treatment of unready and
//! missing pods, and the autoscaling/v2 behaviour (stabilisation windows, scaling
//! policies, min/max). The controller loop that feeds it from the metrics API comes later.

use std::collections::HashMap;

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscalerBehavior,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::runtime::podutil;

/// Upstream's default `--horizontal-pod-autoscaler-tolerance`.
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// Upstream's `--horizontal-pod-autoscaler-cpu-initialization-period`.
pub const CPU_INITIALIZATION_PERIOD: SignedDuration = SignedDuration::from_secs(300);
/// Upstream's `--horizontal-pod-autoscaler-initial-readiness-delay`.
pub const INITIAL_READINESS_DELAY: SignedDuration = SignedDuration::from_secs(30);
/// Upstream's default scale-down stabilisation window.
pub const DEFAULT_DOWNSCALE_STABILIZATION_SECONDS: i32 = 300;

/// Why no proposal could be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HpaError {
    /// No ready pod reported a metric.
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    /// A pod has no request for the resource.
    #[error("missing request for {0} in container(s) of pod {1}")]
    MissingRequest(String, String),
    /// The target is zero.
    #[error("invalid target value 0")]
    ZeroTarget,
}

/// One pod's metric sample (milli-units), as the metrics API reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodMetric {
    /// The value, in milli-units (millicores, bytes × 1000, …).
    pub value: i64,
    /// When the sample was taken.
    pub timestamp: Timestamp,
    /// The window the sample covers.
    pub window: SignedDuration,
}

/// Upstream's groupPods: (ready pod count, unready pods, missing pods, ignored pods).
fn group_pods(
    pods: &[Pod],
    metrics: &HashMap<String, PodMetric>,
    cpu: bool,
    now: Timestamp,
) -> (usize, Vec<String>, Vec<String>, Vec<String>) {
    let (mut ready, mut unready, mut missing, mut ignored) =
        (0, Vec::new(), Vec::new(), Vec::new());
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() || podutil::phase(pod) == "Failed" {
            ignored.push(name);
            continue;
        }
        if podutil::phase(pod) == "Pending" {
            unready.push(name);
            continue;
        }
        let Some(metric) = metrics.get(&name) else {
            missing.push(name);
            continue;
        };
        if cpu {
            let cond = podutil::pod_condition(pod, "Ready");
            let start = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            let is_unready = match (cond, start) {
                (Some(c), Some(start)) => {
                    let transition = c
                        .last_transition_time
                        .as_ref()
                        .map(|t| t.0)
                        .unwrap_or(start);
                    if start + CPU_INITIALIZATION_PERIOD > now {
                        // Still initialising: ignore samples from before it became ready.
                        c.status == "False" || metric.timestamp < transition + metric.window
                    } else {
                        // Unready and never was ready.
                        c.status == "False" && start + INITIAL_READINESS_DELAY > transition
                    }
                }
                _ => true,
            };
            if is_unready {
                unready.push(name);
                continue;
            }
        }
        ready += 1;
    }
    (ready, unready, missing, ignored)
}

/// Upstream's GetResourceUtilizationRatio: (ratio, utilisation %, raw average).
fn utilization_ratio(
    metrics: &HashMap<String, PodMetric>,
    requests: &HashMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), HpaError> {
    let (mut used, mut requested, mut n) = (0i64, 0i64, 0i64);
    for (pod, m) in metrics {
        let Some(r) = requests.get(pod) else { continue };
        used += m.value;
        requested += r;
        n += 1;
    }
    if requested == 0 {
        return Err(HpaError::NoMetrics);
    }
    let utilization = ((used * 100) / requested) as i32;
    Ok((utilization as f64 / target as f64, utilization, used / n))
}

/// Re-checks a proposal after unready and missing pods were given fallback values, so
/// that they never reverse the direction of a scale (upstream's second pass).
fn second_pass(current: i32, ratio: f64, new_ratio: f64, n: usize, tolerance: f64) -> i32 {
    if (1.0 - new_ratio).abs() <= tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return current;
    }
    let proposed = (new_ratio * n as f64).ceil() as i32;
    if (new_ratio < 1.0 && proposed > current) || (new_ratio > 1.0 && proposed < current) {
        return current;
    }
    proposed
}

/// Upstream's GetResourceReplicas: replicas for a Utilization target of a resource.
/// Returns (replicas, current utilisation %, raw average value).
#[allow(clippy::too_many_arguments)]
pub fn resource_replicas(
    current: i32,
    target_utilization: i32,
    cpu: bool,
    pods: &[Pod],
    metrics: &HashMap<String, PodMetric>,
    requests: &HashMap<String, i64>,
    tolerance: f64,
    now: Timestamp,
) -> Result<(i32, i32, i64), HpaError> {
    if target_utilization == 0 {
        return Err(HpaError::ZeroTarget);
    }
    if pods.is_empty() {
        return Err(HpaError::NoMetrics);
    }
    let (ready, unready, missing, ignored) = group_pods(pods, metrics, cpu, now);
    let mut metrics = metrics.clone();
    for p in ignored.iter().chain(unready.iter()) {
        metrics.remove(p);
    }
    if metrics.is_empty() {
        return Err(HpaError::NoMetrics);
    }
    let (ratio, utilization, raw) = utilization_ratio(&metrics, requests, target_utilization)?;
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - ratio).abs() <= tolerance {
            return Ok((current, utilization, raw));
        }
        return Ok(((ratio * ready as f64).ceil() as i32, utilization, raw));
    }
    let sample = |value| PodMetric {
        value,
        timestamp: now,
        window: SignedDuration::ZERO,
    };
    if ratio < 1.0 {
        // Scaling down: missing pods count as using their request (or the target if higher).
        let fallback = 100.max(target_utilization as i64);
        for p in &missing {
            let r = requests.get(p).copied().unwrap_or(0);
            metrics.insert(p.clone(), sample(r * fallback / 100));
        }
    } else if ratio > 1.0 {
        // Scaling up: missing pods count as idle.
        for p in &missing {
            metrics.insert(p.clone(), sample(0));
        }
    }
    if scale_up_with_unready {
        for p in &unready {
            metrics.insert(p.clone(), sample(0));
        }
    }
    let (new_ratio, _, _) = utilization_ratio(&metrics, requests, target_utilization)?;
    Ok((
        second_pass(current, ratio, new_ratio, metrics.len(), tolerance),
        utilization,
        raw,
    ))
}

/// Upstream's calcPlainMetricReplicas: replicas for an AverageValue target of a pods
/// (or resource) metric. Returns (replicas, current average).
pub fn plain_metric_replicas(
    current: i32,
    target_average: i64,
    pods: &[Pod],
    metrics: &HashMap<String, PodMetric>,
    tolerance: f64,
    now: Timestamp,
) -> Result<(i32, i64), HpaError> {
    if target_average == 0 {
        return Err(HpaError::ZeroTarget);
    }
    if pods.is_empty() {
        return Err(HpaError::NoMetrics);
    }
    let (ready, unready, missing, ignored) = group_pods(pods, metrics, false, now);
    let mut metrics = metrics.clone();
    for p in ignored.iter().chain(unready.iter()) {
        metrics.remove(p);
    }
    if metrics.is_empty() {
        return Err(HpaError::NoMetrics);
    }
    let ratio_of = |m: &HashMap<String, PodMetric>| {
        let total: i64 = m.values().map(|v| v.value).sum();
        (
            total as f64 / m.len() as f64 / target_average as f64,
            total / m.len() as i64,
        )
    };
    let (ratio, average) = ratio_of(&metrics);
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - ratio).abs() <= tolerance {
            return Ok((current, average));
        }
        return Ok(((ratio * ready as f64).ceil() as i32, average));
    }
    let sample = |value| PodMetric {
        value,
        timestamp: now,
        window: SignedDuration::ZERO,
    };
    for p in &missing {
        if ratio < 1.0 {
            metrics.insert(p.clone(), sample(target_average));
        } else if ratio > 1.0 {
            metrics.insert(p.clone(), sample(0));
        }
    }
    if scale_up_with_unready {
        for p in &unready {
            metrics.insert(p.clone(), sample(0));
        }
    }
    let (new_ratio, _) = ratio_of(&metrics);
    Ok((
        second_pass(current, ratio, new_ratio, metrics.len(), tolerance),
        average,
    ))
}

/// Upstream's GetObjectMetricReplicas / GetExternalMetricReplicas for a Value target:
/// the usage ratio scales the ready pods.
pub fn value_metric_replicas(
    current: i32,
    ready_pods: i32,
    usage: i64,
    target: i64,
    tolerance: f64,
) -> Result<i32, HpaError> {
    if target == 0 {
        return Err(HpaError::ZeroTarget);
    }
    let ratio = usage as f64 / target as f64;
    if (1.0 - ratio).abs() <= tolerance {
        return Ok(current);
    }
    Ok((ratio * ready_pods as f64).ceil() as i32)
}

/// Upstream's AverageValue target of an object or external metric: usage / target.
pub fn average_value_metric_replicas(
    current: i32,
    usage: i64,
    target_average: i64,
    tolerance: f64,
) -> Result<i32, HpaError> {
    if target_average == 0 || current == 0 {
        return Err(HpaError::ZeroTarget);
    }
    let ratio = usage as f64 / (target_average as f64 * current as f64);
    if (1.0 - ratio).abs() <= tolerance {
        return Ok(current);
    }
    Ok((usage as f64 / target_average as f64).ceil() as i32)
}

/// The behaviour with upstream's defaults filled in (GenerateHPAScaleUpRules/Down).
pub fn effective_behavior(
    b: Option<&HorizontalPodAutoscalerBehavior>,
) -> (HPAScalingRules, HPAScalingRules) {
    let policy = |type_: &str, value, period| HPAScalingPolicy {
        type_: type_.into(),
        value,
        period_seconds: period,
    };
    let mut up = b.and_then(|b| b.scale_up.clone()).unwrap_or_default();
    if up.policies.is_none() {
        up.policies = Some(vec![policy("Pods", 4, 15), policy("Percent", 100, 15)]);
    }
    up.select_policy.get_or_insert_with(|| "Max".into());
    up.stabilization_window_seconds.get_or_insert(0);
    let mut down = b.and_then(|b| b.scale_down.clone()).unwrap_or_default();
    if down.policies.is_none() {
        down.policies = Some(vec![policy("Percent", 100, 15)]);
    }
    down.select_policy.get_or_insert_with(|| "Max".into());
    down.stabilization_window_seconds
        .get_or_insert(DEFAULT_DOWNSCALE_STABILIZATION_SECONDS);
    (up, down)
}

/// A condition the normaliser sets: (type, status, reason, message).
pub type Condition = (&'static str, &'static str, &'static str, &'static str);

/// Per-HPA history that upstream's controller keeps in memory: recommendations for the
/// stabilisation windows and recent scale events for the rate policies.
#[derive(Debug, Default)]
pub struct History {
    recommendations: HashMap<String, Vec<(i32, Timestamp)>>,
    scale_up_events: HashMap<String, Vec<(i32, Timestamp)>>,
    scale_down_events: HashMap<String, Vec<(i32, Timestamp)>>,
}

fn change_in_period(events: &[(i32, Timestamp)], period_seconds: i32, now: Timestamp) -> i32 {
    let cutoff = now - SignedDuration::from_secs(period_seconds as i64);
    events
        .iter()
        .filter(|(_, t)| *t > cutoff)
        .map(|(c, _)| *c)
        .sum()
}

/// Upstream's calculateScaleUpLimitWithScalingRules.
fn scale_up_limit(
    current: i32,
    up: &[(i32, Timestamp)],
    down: &[(i32, Timestamp)],
    rules: &HPAScalingRules,
    now: Timestamp,
) -> i32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    let mut result = if select == "Min" { i32::MAX } else { i32::MIN };
    for p in rules.policies.iter().flatten() {
        let start = current - change_in_period(up, p.period_seconds, now)
            + change_in_period(down, p.period_seconds, now);
        let proposed = if p.type_ == "Pods" {
            start + p.value
        } else {
            (start as f64 * (1.0 + p.value as f64 / 100.0)).ceil() as i32
        };
        result = if select == "Min" {
            result.min(proposed)
        } else {
            result.max(proposed)
        };
    }
    result
}

/// Upstream's calculateScaleDownLimitWithBehaviors.
fn scale_down_limit(
    current: i32,
    up: &[(i32, Timestamp)],
    down: &[(i32, Timestamp)],
    rules: &HPAScalingRules,
    now: Timestamp,
) -> i32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    let mut result = if select == "Min" { i32::MIN } else { i32::MAX };
    for p in rules.policies.iter().flatten() {
        let start = current - change_in_period(up, p.period_seconds, now)
            + change_in_period(down, p.period_seconds, now);
        let proposed = if p.type_ == "Pods" {
            start - p.value
        } else {
            (start as f64 * (1.0 - p.value as f64 / 100.0)) as i32
        };
        result = if select == "Min" {
            result.max(proposed)
        } else {
            result.min(proposed)
        };
    }
    result
}

impl History {
    /// Records a scale from `from` to `to` at `now` (upstream's storeScaleEvent), dropping
    /// events older than the longest policy period.
    pub fn record_scale(
        &mut self,
        key: &str,
        behavior: Option<&HorizontalPodAutoscalerBehavior>,
        from: i32,
        to: i32,
        now: Timestamp,
    ) {
        let (up, down) = effective_behavior(behavior);
        let longest = |r: &HPAScalingRules| {
            r.policies
                .iter()
                .flatten()
                .map(|p| p.period_seconds)
                .max()
                .unwrap_or(0)
        };
        let (events, rules) = if to > from {
            (self.scale_up_events.entry(key.into()).or_default(), &up)
        } else {
            (self.scale_down_events.entry(key.into()).or_default(), &down)
        };
        let cutoff = now - SignedDuration::from_secs(longest(rules) as i64);
        events.retain(|(_, t)| *t > cutoff);
        events.push(((to - from).abs(), now));
    }

    /// Upstream's normalizeDesiredReplicasWithBehaviors: stabilise the proposal over the
    /// windows, then clamp it by the rate policies and min/max. Returns the replicas and the
    /// AbleToScale and ScalingLimited conditions to set.
    #[allow(clippy::too_many_arguments)]
    pub fn normalize(
        &mut self,
        key: &str,
        behavior: Option<&HorizontalPodAutoscalerBehavior>,
        current: i32,
        proposed: i32,
        min_replicas: i32,
        max_replicas: i32,
        now: Timestamp,
    ) -> (i32, [Condition; 2]) {
        let (up, down) = effective_behavior(behavior);
        // Stabilise.
        let up_cutoff =
            now - SignedDuration::from_secs(up.stabilization_window_seconds.unwrap_or(0) as i64);
        let down_cutoff =
            now - SignedDuration::from_secs(down.stabilization_window_seconds.unwrap_or(0) as i64);
        let recs = self.recommendations.entry(key.into()).or_default();
        let (mut up_rec, mut down_rec) = (proposed, proposed);
        let mut old = None;
        for (i, (r, t)) in recs.iter().enumerate() {
            if *t > up_cutoff {
                up_rec = up_rec.min(*r);
            }
            if *t > down_cutoff {
                down_rec = down_rec.max(*r);
            }
            if *t < up_cutoff && *t < down_cutoff {
                old = Some(i);
            }
        }
        let stabilized = current.max(up_rec).min(down_rec);
        match old {
            Some(i) => recs[i] = (proposed, now),
            None => recs.push((proposed, now)),
        }
        let able: Condition = if stabilized != proposed {
            if proposed >= current {
                ("AbleToScale", "True", "ScaleUpStabilized", "recent recommendations were lower than current one, applying the lowest recent recommendation")
            } else {
                ("AbleToScale", "True", "ScaleDownStabilized", "recent recommendations were higher than current one, applying the highest recent recommendation")
            }
        } else {
            (
                "AbleToScale",
                "True",
                "ReadyForNewScale",
                "recommended size matches current size",
            )
        };
        // Rate-limit and clamp.
        let ups = self.scale_up_events.get(key).cloned().unwrap_or_default();
        let downs = self.scale_down_events.get(key).cloned().unwrap_or_default();
        let mut desired = stabilized;
        let mut limit = (
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        );
        if stabilized > current {
            let up_limit = scale_up_limit(current, &ups, &downs, &up, now).max(current);
            let (max_allowed, why) = if max_replicas > up_limit {
                (up_limit, ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate"))
            } else {
                (
                    max_replicas,
                    (
                        "TooManyReplicas",
                        "the desired replica count is more than the maximum replica count",
                    ),
                )
            };
            if stabilized > max_allowed {
                desired = max_allowed;
                limit = why;
            }
        } else if stabilized < current {
            let down_limit = scale_down_limit(current, &ups, &downs, &down, now).min(current);
            let (min_allowed, why) = if min_replicas < down_limit {
                (down_limit, ("ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate"))
            } else {
                (
                    min_replicas,
                    (
                        "TooFewReplicas",
                        "the desired replica count is less than the minimum replica count",
                    ),
                )
            };
            if stabilized < min_allowed {
                desired = min_allowed;
                limit = why;
            }
        }
        let limited: Condition = (
            "ScalingLimited",
            if desired == stabilized {
                "False"
            } else {
                "True"
            },
            limit.0,
            limit.1,
        );
        (desired, [able, limited])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(name: &str, phase: &str, ready: bool, started_ago: i64, now: Timestamp) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            start_time: Some(Time(now - SignedDuration::from_secs(started_ago))),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(now - SignedDuration::from_secs(started_ago - 10))),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    fn m(value: i64, now: Timestamp) -> PodMetric {
        PodMetric {
            value,
            timestamp: now,
            window: SignedDuration::from_secs(30),
        }
    }

    #[test]
    fn utilization_scales_ready_pods_and_respects_tolerance() {
        let now = Timestamp::now();
        let pods: Vec<Pod> = (0..3)
            .map(|i| pod(&format!("p{i}"), "Running", true, 600, now))
            .collect();
        let req: HashMap<String, i64> = (0..3).map(|i| (format!("p{i}"), 1000)).collect();
        // 3 pods at 90% of request with target 50%: ceil(1.8 * 3) = 6.
        let metrics: HashMap<String, PodMetric> =
            (0..3).map(|i| (format!("p{i}"), m(900, now))).collect();
        let (r, util, _) =
            resource_replicas(3, 50, true, &pods, &metrics, &req, DEFAULT_TOLERANCE, now).unwrap();
        assert_eq!((r, util), (6, 90));
        // 53% against 50% is within the 10% tolerance.
        let metrics: HashMap<String, PodMetric> =
            (0..3).map(|i| (format!("p{i}"), m(530, now))).collect();
        assert_eq!(
            resource_replicas(3, 50, true, &pods, &metrics, &req, DEFAULT_TOLERANCE, now)
                .unwrap()
                .0,
            3
        );
    }

    #[test]
    fn unready_pods_count_as_idle_on_scale_up_and_missing_as_full_on_scale_down() {
        let now = Timestamp::now();
        let mut pods: Vec<Pod> = (0..2)
            .map(|i| pod(&format!("p{i}"), "Running", true, 600, now))
            .collect();
        pods.push(pod("pending", "Pending", false, 5, now));
        let req: HashMap<String, i64> = ["p0", "p1", "pending"]
            .iter()
            .map(|n| (n.to_string(), 1000))
            .collect();
        let metrics: HashMap<String, PodMetric> = [("p0", m(1000, now)), ("p1", m(1000, now))]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        // Ratio 2.0 on 2 ready pods; the pending pod dilutes it to 200/150... = ceil(1.333 * 3) = 4.
        assert_eq!(
            resource_replicas(2, 50, true, &pods, &metrics, &req, DEFAULT_TOLERANCE, now)
                .unwrap()
                .0,
            4
        );

        let pods: Vec<Pod> = (0..4)
            .map(|i| pod(&format!("p{i}"), "Running", true, 600, now))
            .collect();
        let req: HashMap<String, i64> = (0..4).map(|i| (format!("p{i}"), 1000)).collect();
        let metrics: HashMap<String, PodMetric> =
            (0..2).map(|i| (format!("p{i}"), m(100, now))).collect();
        // 10% vs 50%: the two missing pods count at 100% → (100+100+1000+1000)/4000 = 55% → no change.
        assert_eq!(
            resource_replicas(4, 50, true, &pods, &metrics, &req, DEFAULT_TOLERANCE, now)
                .unwrap()
                .0,
            4
        );
    }

    #[test]
    fn plain_and_object_metrics() {
        let now = Timestamp::now();
        let pods: Vec<Pod> = (0..2)
            .map(|i| pod(&format!("p{i}"), "Running", true, 600, now))
            .collect();
        let metrics: HashMap<String, PodMetric> =
            (0..2).map(|i| (format!("p{i}"), m(300, now))).collect();
        assert_eq!(
            plain_metric_replicas(2, 100, &pods, &metrics, DEFAULT_TOLERANCE, now).unwrap(),
            (6, 300)
        );
        assert_eq!(
            value_metric_replicas(2, 2, 400, 100, DEFAULT_TOLERANCE).unwrap(),
            8
        );
        assert_eq!(
            average_value_metric_replicas(2, 1050, 100, DEFAULT_TOLERANCE).unwrap(),
            11
        );
    }

    #[test]
    fn scale_down_is_stabilized_over_the_window() {
        let mut h = History::default();
        let t0 = Timestamp::now();
        let (r, _) = h.normalize("ns/h", None, 10, 10, 1, 20, t0);
        assert_eq!(r, 10);
        // A lower recommendation 60 s later is held back by the 300 s window.
        let (r, c) = h.normalize(
            "ns/h",
            None,
            10,
            2,
            1,
            20,
            t0 + SignedDuration::from_secs(60),
        );
        assert_eq!(r, 10);
        assert_eq!(c[0].2, "ScaleDownStabilized");
        // After the window the low recommendation wins.
        let (r, _) = h.normalize(
            "ns/h",
            None,
            10,
            2,
            1,
            20,
            t0 + SignedDuration::from_secs(400),
        );
        assert_eq!(r, 2);
    }

    #[test]
    fn scale_up_is_rate_limited_by_policies_and_max() {
        let mut h = History::default();
        let now = Timestamp::now();
        // Default policies: max(+4 pods, +100%) per 15 s: from 3 at most 7.
        let (r, c) = h.normalize("k", None, 3, 50, 1, 100, now);
        assert_eq!(r, 7);
        assert_eq!((c[1].1, c[1].2), ("True", "ScaleUpLimit"));
        h.record_scale("k", None, 3, 7, now);
        // Within the same period the budget is spent: period start 3, limit still 7.
        let (r, _) = h.normalize("k", None, 7, 50, 1, 100, now + SignedDuration::from_secs(5));
        assert_eq!(r, 7);
        let (r, c) = h.normalize("k2", None, 3, 50, 1, 5, now);
        assert_eq!((r, c[1].2), (5, "TooManyReplicas"));
    }
}
