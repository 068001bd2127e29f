//! The served resources, as upstream v1.32 serves them.

/// Upstream's verbs for an ordinary persisted resource.
pub const STANDARD_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group (`""` for core).
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Kind, e.g. `Deployment`.
    pub kind: &'static str,
    /// Plural resource name, e.g. `deployments`.
    pub plural: &'static str,
    /// Singular resource name.
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names, as `kubectl get` accepts them.
    pub short_names: &'static [&'static str],
    /// Categories (`all` makes `kubectl get all` list it).
    pub categories: &'static [&'static str],
    /// Verbs on the resource itself.
    pub verbs: &'static [&'static str],
    /// Subresources served for it (`status`, `scale`, `binding`, ...).
    pub subresources: &'static [&'static str],
    /// Key prefix under `/registry/`, as upstream lays out etcd (e.g. `services/specs`).
    pub storage: &'static str,
    /// Whether this group/version is the one objects are stored in. Versions that share
    /// storage with another (events.k8s.io/v1, autoscaling/v1) are converted on the way.
    pub storage_version: bool,
}

impl ResourceInfo {
    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The key prefix of all objects (`/registry/<storage>/`).
    pub fn key_prefix(&self) -> String {
        format!("/registry/{}/", self.storage)
    }

    /// The key prefix of one namespace's objects.
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        format!("/registry/{}/{}/", self.storage, namespace)
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/{}", self.storage, ns, name),
            _ => format!("/registry/{}/{}", self.storage, name),
        }
    }

    /// Whether the resource has a subresource.
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// `plural.group` (or `plural` for core), as in RBAC and error messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

macro_rules! res {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr,
     short: [$($short:expr),*], cat: [$($cat:expr),*], sub: [$($sub:expr),*], storage: $storage:expr,
     stored: $stored:expr) => {
        ResourceInfo {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            verbs: STANDARD_VERBS,
            subresources: &[$($sub),*],
            storage: $storage,
            storage_version: $stored,
        }
    };
}

/// Every persisted resource served, grouped by API group in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    // core/v1
    res!("", "v1", "ConfigMap", "configmaps", "configmap", true, short: ["cm"], cat: [], sub: [], storage: "configmaps", stored: true),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", true, short: ["ep"], cat: [], sub: [], storage: "services/endpoints", stored: true),
    res!("", "v1", "Event", "events", "event", true, short: ["ev"], cat: [], sub: [], storage: "events", stored: true),
    res!("", "v1", "LimitRange", "limitranges", "limitrange", true, short: ["limits"], cat: [], sub: [], storage: "limitranges", stored: true),
    res!("", "v1", "Namespace", "namespaces", "namespace", false, short: ["ns"], cat: [], sub: ["status", "finalize"], storage: "namespaces", stored: true),
    res!("", "v1", "Node", "nodes", "node", false, short: ["no"], cat: [], sub: ["status", "proxy"], storage: "minions", stored: true),
    res!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true, short: ["pvc"], cat: [], sub: ["status"], storage: "persistentvolumeclaims", stored: true),
    res!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", false, short: ["pv"], cat: [], sub: ["status"], storage: "persistentvolumes", stored: true),
    res!("", "v1", "Pod", "pods", "pod", true, short: ["po"], cat: ["all"], sub: ["status", "binding", "log", "exec", "attach", "portforward"], storage: "pods", stored: true),
    res!("", "v1", "PodTemplate", "podtemplates", "podtemplate", true, short: [], cat: [], sub: [], storage: "podtemplates", stored: true),
    res!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", true, short: ["rc"], cat: ["all"], sub: ["status", "scale"], storage: "controllers", stored: true),
    res!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", true, short: ["quota"], cat: [], sub: ["status"], storage: "resourcequotas", stored: true),
    res!("", "v1", "Secret", "secrets", "secret", true, short: [], cat: [], sub: [], storage: "secrets", stored: true),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, short: ["sa"], cat: [], sub: ["token"], storage: "serviceaccounts", stored: true),
    res!("", "v1", "Service", "services", "service", true, short: ["svc"], cat: ["all"], sub: ["status"], storage: "services/specs", stored: true),
    // apps/v1
    res!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true, short: [], cat: [], sub: [], storage: "controllerrevisions", stored: true),
    res!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, short: ["ds"], cat: ["all"], sub: ["status"], storage: "daemonsets", stored: true),
    res!("apps", "v1", "Deployment", "deployments", "deployment", true, short: ["deploy"], cat: ["all"], sub: ["status", "scale"], storage: "deployments", stored: true),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, short: ["rs"], cat: ["all"], sub: ["status", "scale"], storage: "replicasets", stored: true),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, short: ["sts"], cat: ["all"], sub: ["status", "scale"], storage: "statefulsets", stored: true),
    // autoscaling: v2 is stored and preferred, v1 is converted.
    res!("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", true, short: ["hpa"], cat: ["all"], sub: ["status"], storage: "horizontalpodautoscalers", stored: true),
    res!("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", true, short: ["hpa"], cat: ["all"], sub: ["status"], storage: "horizontalpodautoscalers", stored: false),
    // batch/v1
    res!("batch", "v1", "CronJob", "cronjobs", "cronjob", true, short: ["cj"], cat: ["all"], sub: ["status"], storage: "cronjobs", stored: true),
    res!("batch", "v1", "Job", "jobs", "job", true, short: [], cat: ["all"], sub: ["status"], storage: "jobs", stored: true),
    // coordination.k8s.io/v1
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, short: [], cat: [], sub: [], storage: "leases", stored: true),
    // discovery.k8s.io/v1
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, short: [], cat: [], sub: [], storage: "endpointslices", stored: true),
    // events.k8s.io/v1 shares storage with core/v1 events.
    res!("events.k8s.io", "v1", "Event", "events", "event", true, short: ["ev"], cat: [], sub: [], storage: "events", stored: false),
    // networking.k8s.io/v1
    res!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", false, short: [], cat: [], sub: [], storage: "ingressclasses", stored: true),
    res!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true, short: ["ing"], cat: [], sub: ["status"], storage: "ingress", stored: true),
    res!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", true, short: ["netpol"], cat: [], sub: [], storage: "networkpolicies", stored: true),
    // policy/v1
    res!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", true, short: ["pdb"], cat: [], sub: ["status"], storage: "poddisruptionbudgets", stored: true),
    // scheduling.k8s.io/v1
    res!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", false, short: ["pc"], cat: [], sub: [], storage: "priorityclasses", stored: true),
    // storage.k8s.io/v1
    res!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", false, short: ["sc"], cat: [], sub: [], storage: "storageclasses", stored: true),
];

/// The API groups served, in discovery order, each with its versions (preferred first).
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version);
                }
            }
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// The resources of one group/version.
pub fn resources_of<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceInfo> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// Finds a resource by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by `apiVersion` and kind.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = split_api_version(api_version);
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// The version objects of this resource are stored in.
pub fn storage_of(r: &ResourceInfo) -> &'static ResourceInfo {
    if r.storage_version {
        return RESOURCES
            .iter()
            .find(|x| {
                std::ptr::eq(*x, r)
                    || (x.group == r.group && x.version == r.version && x.plural == r.plural)
            })
            .expect("resource is in the registry");
    }
    RESOURCES
        .iter()
        .find(|x| x.storage == r.storage && x.storage_version)
        .expect("every shared storage prefix has a storage version")
}

/// Splits `group/version` (or `v1`) into group and version.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_upstream_layout() {
        let svc = find("", "v1", "services").unwrap();
        assert_eq!(
            svc.key(Some("default"), "kubernetes"),
            "/registry/services/specs/default/kubernetes"
        );
        let node = find("", "v1", "nodes").unwrap();
        assert_eq!(node.key(None, "n1"), "/registry/minions/n1");
    }

    #[test]
    fn shared_storage_resolves_to_stored_version() {
        let ev = find("events.k8s.io", "v1", "events").unwrap();
        let stored = storage_of(ev);
        assert_eq!((stored.group, stored.version), ("", "v1"));
        let hpa1 = find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        assert_eq!(storage_of(hpa1).version, "v2");
    }

    #[test]
    fn groups_list_preferred_version_first() {
        let g = groups();
        assert_eq!(g[0].0, "");
        let autoscaling = g.iter().find(|(n, _)| *n == "autoscaling").unwrap();
        assert_eq!(autoscaling.1, vec!["v2", "v1"]);
    }

    #[test]
    fn every_plural_unique_within_group_version() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.plural == b.plural),
                    "{} duplicated",
                    a.plural
                );
            }
        }
    }
}
