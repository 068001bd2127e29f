//! Resource amounts and pod requests as upstream's scheduler counts them
//! (`component-helpers/resource.PodRequests`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The CPU a container without a cpu request counts as when scoring (upstream's
/// `DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory a container without a memory request counts as when scoring (200Mi).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of each resource: cpu in millicores, the rest in whole units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// The number of pods (only meaningful for allocatable).
    pub allowed_pod_number: i64,
    /// Extended resources, hugepages and other scalar resources.
    pub scalar: BTreeMap<String, i64>,
}

/// Parses a quantity into whole units (rounded up as upstream's `Value`).
pub fn quantity_value(q: &Quantity) -> i64 {
    match skiff_api::validation::parse_quantity(&q.0) {
        Ok(v) => ceil_div(v.nanos, 1_000_000_000),
        Err(_) => 0,
    }
}

/// Parses a quantity into thousandths (rounded up as upstream's `MilliValue`).
pub fn quantity_milli(q: &Quantity) -> i64 {
    match skiff_api::validation::parse_quantity(&q.0) {
        Ok(v) => ceil_div(v.nanos, 1_000_000),
        Err(_) => 0,
    }
}

fn ceil_div(n: i128, d: i128) -> i64 {
    let q = n / d;
    let r = n % d;
    let q = if r > 0 { q + 1 } else { q };
    q.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

impl Resource {
    /// Builds a resource from a resource list (`requests`, `allocatable`, `overhead`).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resource {
        let mut r = Resource::default();
        for (name, q) in list {
            r.set(name, q);
        }
        r
    }

    fn set(&mut self, name: &str, q: &Quantity) {
        match name {
            "cpu" => self.milli_cpu = quantity_milli(q),
            "memory" => self.memory = quantity_value(q),
            "ephemeral-storage" => self.ephemeral_storage = quantity_value(q),
            "pods" => self.allowed_pod_number = quantity_value(q),
            _ => {
                if is_scalar_resource_name(name) {
                    self.scalar.insert(name.to_string(), quantity_value(q));
                }
            }
        }
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.allowed_pod_number += other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtracts `other` from `self`.
    pub fn sub(&mut self, other: &Resource) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.allowed_pod_number -= other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Raises each amount of `self` to at least the one in `other`.
    pub fn max_with(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.allowed_pod_number = self.allowed_pod_number.max(other.allowed_pod_number);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    /// The amount of a named resource.
    pub fn get(&self, name: &str) -> i64 {
        match name {
            "cpu" => self.milli_cpu,
            "memory" => self.memory,
            "ephemeral-storage" => self.ephemeral_storage,
            "pods" => self.allowed_pod_number,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }

    /// Whether nothing is requested.
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// A resource name resolved once, so hot paths do not compare strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResourceName {
    /// `cpu`.
    Cpu,
    /// `memory`.
    Memory,
    /// `ephemeral-storage`.
    EphemeralStorage,
    /// `pods`.
    Pods,
    /// Any other resource.
    Other(String),
}

impl ResourceName {
    /// Resolves a name.
    pub fn new(name: &str) -> ResourceName {
        match name {
            "cpu" => ResourceName::Cpu,
            "memory" => ResourceName::Memory,
            "ephemeral-storage" => ResourceName::EphemeralStorage,
            "pods" => ResourceName::Pods,
            other => ResourceName::Other(other.to_string()),
        }
    }

    /// Whether this is a scalar (extended, hugepages, attachable volumes) resource.
    pub fn is_scalar(&self) -> bool {
        matches!(self, ResourceName::Other(n) if is_scalar_resource_name(n))
    }
}

impl Resource {
    /// The amount of a resolved resource.
    pub fn amount(&self, name: &ResourceName) -> i64 {
        match name {
            ResourceName::Cpu => self.milli_cpu,
            ResourceName::Memory => self.memory,
            ResourceName::EphemeralStorage => self.ephemeral_storage,
            ResourceName::Pods => self.allowed_pod_number,
            ResourceName::Other(n) => self.scalar.get(n).copied().unwrap_or(0),
        }
    }
}

/// Whether a resource name is a scalar one: extended (domain-prefixed outside
/// `kubernetes.io/`), `hugepages-*` or `attachable-volumes-*`.
pub fn is_scalar_resource_name(name: &str) -> bool {
    if name.starts_with("hugepages-") || name.starts_with("attachable-volumes-") {
        return true;
    }
    if name.starts_with("requests.") {
        return false;
    }
    match name.split_once('/') {
        Some((domain, _)) => domain != "kubernetes.io" && !domain.ends_with(".kubernetes.io"),
        None => false,
    }
}

fn container_requests(c: &Container, non_zero: bool) -> Resource {
    let mut r = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .map(Resource::from_list)
        .unwrap_or_default();
    if non_zero {
        let reqs = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        if !reqs.is_some_and(|m| m.contains_key("cpu")) {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !reqs.is_some_and(|m| m.contains_key("memory")) {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

/// A pod's effective requests: the sum of its containers (and sidecars), raised to what any
/// init container needs alongside the sidecars started before it, plus the pod overhead.
/// With `non_zero`, containers missing a cpu or memory request count the scoring defaults.
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resource {
    let Some(spec) = pod.spec.as_ref() else {
        return Resource::default();
    };
    let mut reqs = Resource::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_zero));
    }
    let mut restartable = Resource::default();
    let mut init_max = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let cr = container_requests(c, non_zero);
        if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&cr);
            restartable.add(&cr);
            init_max.max_with(&restartable);
        } else {
            let mut tmp = cr;
            tmp.add(&restartable);
            init_max.max_with(&tmp);
        }
    }
    reqs.max_with(&init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        reqs.add(&Resource::from_list(overhead));
    }
    reqs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn init_containers_sidecars_and_overhead() {
        let p = pod(serde_json::json!({
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}},
                    {"name": "b", "resources": {"requests": {"cpu": "200m", "example.com/gpu": "1"}}}
                ],
                "initContainers": [
                    {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                    {"name": "i1", "resources": {"requests": {"cpu": "1", "memory": "50Mi"}}}
                ],
                "overhead": {"cpu": "10m"}
            }
        }));
        let r = pod_requests(&p, false);
        // max(100+200+50, 1000+50) + 10
        assert_eq!(r.milli_cpu, 1060);
        assert_eq!(r.memory, 100 * 1024 * 1024);
        assert_eq!(r.scalar.get("example.com/gpu"), Some(&1));
        let nz = pod_requests(&p, true);
        // Container b and the sidecar have no memory request: 200Mi each by default.
        assert_eq!(nz.memory, 500 * 1024 * 1024);
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_milli(&Quantity("1.5".into())), 1500);
        assert_eq!(quantity_milli(&Quantity("1m".into())), 1);
        assert_eq!(quantity_value(&Quantity("1Ki".into())), 1024);
        assert!(is_scalar_resource_name("nvidia.com/gpu"));
        assert!(is_scalar_resource_name("hugepages-2Mi"));
        assert!(!is_scalar_resource_name("cpu"));
    }
}
