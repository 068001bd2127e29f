//! The scheduler's view of the cluster: pods and nodes with their scheduling facts computed
//! once (`PodInfo`, `NodeInfo`), and the `Snapshot` every cycle reads.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint, Toleration};

use crate::resource::{pod_requests, Resource};
use crate::selectors::{Labels, NodeTerm, Requirement, Selector};

/// A pod affinity or anti-affinity term, compiled.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    /// Namespaces named by the term (the pod's own when none and no selector).
    pub namespaces: Vec<String>,
    /// The namespace selector; `None` when the term had none.
    pub namespace_selector: Option<Selector>,
    /// The pod label selector, with `matchLabelKeys`/`mismatchLabelKeys` merged in.
    pub selector: Selector,
    /// The topology key.
    pub topology_key: String,
}

/// A weighted (preferred) affinity term.
#[derive(Clone, Debug)]
pub struct WeightedTerm {
    /// The term.
    pub term: AffinityTerm,
    /// Its weight (1-100).
    pub weight: i64,
}

impl AffinityTerm {
    fn new(t: &PodAffinityTerm, pod_ns: &str, pod_labels: &Labels) -> AffinityTerm {
        let mut selector = Selector::from_label_selector(t.label_selector.as_ref());
        if t.label_selector.is_some() {
            for k in t.match_label_keys.iter().flatten() {
                if let Some(v) = pod_labels.get(k) {
                    selector.reqs.push(Requirement {
                        key: k.clone(),
                        op: crate::selectors::Op::In,
                        values: vec![v.clone()],
                    });
                }
            }
            for k in t.mismatch_label_keys.iter().flatten() {
                if let Some(v) = pod_labels.get(k) {
                    selector.reqs.push(Requirement {
                        key: k.clone(),
                        op: crate::selectors::Op::NotIn,
                        values: vec![v.clone()],
                    });
                }
            }
        }
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        let namespace_selector = t
            .namespace_selector
            .as_ref()
            .map(|s| Selector::from_label_selector(Some(s)));
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.push(pod_ns.to_string());
        }
        AffinityTerm {
            namespaces,
            namespace_selector,
            selector,
            topology_key: t.topology_key.clone(),
        }
    }

    /// Whether `pod` falls under this term (`PodMatchesTermsNamespaceAndSelector`).
    pub fn matches(&self, pod: &PodInfo, snapshot: &Snapshot) -> bool {
        if !self.namespaces.contains(&pod.namespace) {
            let Some(ns) = &self.namespace_selector else {
                return false;
            };
            let ok = ns.is_everything()
                || snapshot
                    .namespace_labels
                    .get(&pod.namespace)
                    .is_some_and(|l| ns.matches(l));
            if !ok {
                return false;
            }
        }
        self.selector.matches(&pod.labels)
    }
}

/// A host port a container asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// The host IP (`0.0.0.0` when unset).
    pub ip: String,
    /// The protocol (`TCP` when unset).
    pub protocol: String,
    /// The port.
    pub port: i32,
}

impl HostPort {
    /// Whether two host ports collide (the wildcard address collides with every address).
    pub fn conflicts(&self, o: &HostPort) -> bool {
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == o.ip || self.ip == "0.0.0.0" || o.ip == "0.0.0.0")
    }
}

/// The node constraints of a pod: `nodeSelector` and required node affinity.
#[derive(Clone, Debug, Default)]
pub struct RequiredNodeAffinity {
    node_selector: Option<Labels>,
    terms: Option<Vec<NodeTerm>>,
}

impl RequiredNodeAffinity {
    /// Whether a node with these labels and name satisfies both.
    pub fn matches(&self, labels: &Labels, name: &str) -> bool {
        if let Some(sel) = &self.node_selector {
            if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                return false;
            }
        }
        match &self.terms {
            Some(terms) => terms.iter().any(|t| t.matches(labels, name)),
            None => true,
        }
    }

    /// The required terms, if any.
    pub fn terms(&self) -> Option<&[NodeTerm]> {
        self.terms.as_deref()
    }
}

/// A preferred node affinity term.
#[derive(Clone, Debug)]
pub struct PreferredNodeTerm {
    /// The term.
    pub term: NodeTerm,
    /// Its weight.
    pub weight: i64,
}

/// A pod with the facts scheduling needs, computed once.
#[derive(Debug)]
pub struct PodInfo {
    /// The pod.
    pub pod: Arc<Pod>,
    /// `namespace/name`.
    pub key: String,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The uid.
    pub uid: String,
    /// Labels.
    pub labels: Labels,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// Effective requests.
    pub requests: Resource,
    /// Requests with the scoring defaults for missing cpu/memory.
    pub non_zero_requests: Resource,
    /// Required pod affinity terms.
    pub required_affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// Preferred pod affinity terms.
    pub preferred_affinity: Vec<WeightedTerm>,
    /// Preferred pod anti-affinity terms.
    pub preferred_anti_affinity: Vec<WeightedTerm>,
    /// Node selector and required node affinity.
    pub node_affinity: RequiredNodeAffinity,
    /// Preferred node affinity terms.
    pub preferred_node_affinity: Vec<PreferredNodeTerm>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// Host ports of its containers.
    pub host_ports: Vec<HostPort>,
    /// Whether it is being deleted.
    pub terminating: bool,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// Container images.
    pub images: Vec<String>,
}

impl PodInfo {
    /// Computes the scheduling facts of a pod.
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let aff = spec.affinity.as_ref();
        let pa = aff.and_then(|a| a.pod_affinity.as_ref());
        let paa = aff.and_then(|a| a.pod_anti_affinity.as_ref());
        let req = |v: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            v.into_iter()
                .flatten()
                .map(|t| AffinityTerm::new(t, &namespace, &labels))
                .collect()
        };
        let pref =
            |v: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| -> Vec<WeightedTerm> {
                v.into_iter()
                    .flatten()
                    .map(|t| WeightedTerm {
                        term: AffinityTerm::new(&t.pod_affinity_term, &namespace, &labels),
                        weight: t.weight as i64,
                    })
                    .collect()
            };
        let na = aff.and_then(|a| a.node_affinity.as_ref());
        let node_affinity = RequiredNodeAffinity {
            node_selector: spec.node_selector.clone().filter(|m| !m.is_empty()),
            terms: na
                .and_then(|n| {
                    n.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|r| r.node_selector_terms.iter().map(NodeTerm::new).collect()),
        };
        let preferred_node_affinity = na
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .filter(|p| p.weight != 0)
            .map(|p| PreferredNodeTerm {
                term: NodeTerm::new(&p.preference),
                weight: p.weight as i64,
            })
            .collect();
        let mut host_ports = Vec::new();
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    host_ports.push(HostPort {
                        ip: p
                            .host_ip
                            .clone()
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| "0.0.0.0".into()),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        port: hp,
                    });
                }
            }
        }
        let images = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .filter_map(|c| c.image.clone())
            .collect();
        PodInfo {
            key: format!("{namespace}/{name}"),
            uid: meta.uid.clone().unwrap_or_default(),
            priority: spec.priority.unwrap_or(0),
            requests: pod_requests(&pod, false),
            non_zero_requests: pod_requests(&pod, true),
            required_affinity: req(pa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: req(paa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: pref(pa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: pref(paa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            node_affinity,
            preferred_node_affinity,
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            host_ports,
            terminating: meta.deletion_timestamp.is_some(),
            node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
            images,
            namespace,
            name,
            labels,
            pod,
        }
    }

    /// Whether the pod has any pod affinity or anti-affinity term.
    pub fn has_affinity(&self) -> bool {
        !self.required_affinity.is_empty()
            || !self.required_anti_affinity.is_empty()
            || !self.preferred_affinity.is_empty()
            || !self.preferred_anti_affinity.is_empty()
    }
}

/// A node with the pods on it and their totals.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node.
    pub node: Arc<Node>,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// Its taints.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// Allocatable resources.
    pub allocatable: Resource,
    /// The sum of the requests of its pods.
    pub requested: Resource,
    /// The same with the scoring defaults for missing cpu/memory requests.
    pub non_zero_requested: Resource,
    /// Its pods.
    pub pods: Vec<Arc<PodInfo>>,
    /// How many of its pods have any pod (anti-)affinity.
    pub pods_with_affinity: usize,
    /// How many of its pods have required anti-affinity.
    pub pods_with_required_anti_affinity: usize,
    /// Host ports in use.
    pub used_ports: Vec<HostPort>,
    /// Image names (every name of every image) to size in bytes.
    pub images: HashMap<String, i64>,
}

impl NodeInfo {
    /// A node with no pods.
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let mut n = NodeInfo {
            name: String::new(),
            labels: Labels::new(),
            taints: Vec::new(),
            unschedulable: false,
            allocatable: Resource::default(),
            requested: Resource::default(),
            non_zero_requested: Resource::default(),
            pods: Vec::new(),
            pods_with_affinity: 0,
            pods_with_required_anti_affinity: 0,
            used_ports: Vec::new(),
            images: HashMap::new(),
            node: node.clone(),
        };
        n.set_node(node);
        n
    }

    /// Replaces the node object, keeping its pods.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.name = node.metadata.name.clone().unwrap_or_default();
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.as_ref();
        self.taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        let status = node.status.as_ref();
        self.allocatable = status
            .and_then(|s| s.allocatable.as_ref())
            .map(Resource::from_list)
            .unwrap_or_default();
        self.images.clear();
        for img in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            let size = img.size_bytes.unwrap_or(0);
            for n in img.names.iter().flatten() {
                self.images.insert(n.clone(), size);
            }
        }
        self.node = node;
    }

    /// Accounts a pod to this node.
    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.non_zero_requested.add(&p.non_zero_requests);
        if p.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if !p.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.used_ports.extend(p.host_ports.iter().cloned());
        self.pods.push(p);
    }

    /// Removes a pod by uid, returning it.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.uid == uid)?;
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.non_zero_requested.sub(&p.non_zero_requests);
        if p.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !p.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        for hp in &p.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        Some(p)
    }

    /// The node's allocatable pod count.
    pub fn allowed_pods(&self) -> i64 {
        self.allocatable.allowed_pod_number
    }
}

/// A workload selector the default spreading constraints are built from (a Service,
/// ReplicationController, ReplicaSet or StatefulSet).
#[derive(Clone, Debug)]
pub struct OwnerSelector {
    /// Its namespace.
    pub namespace: String,
    /// Its selector.
    pub selector: Selector,
    /// Its selector as labels, when it is a plain map (Services and RCs), which upstream merges
    /// into one label set.
    pub as_map: Option<Labels>,
}

/// The cluster as one scheduling cycle sees it: nodes with their pods, indexed by name.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The nodes.
    pub nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Image name to how many nodes have it.
    pub image_nodes: HashMap<String, usize>,
    /// Namespace labels, for namespace selectors in affinity terms.
    pub namespace_labels: HashMap<String, Labels>,
    /// Workload selectors by key (`kind/ns/name`), for default spreading.
    pub owner_selectors: HashMap<String, OwnerSelector>,
    /// Pods bound to nodes not (yet) in the snapshot.
    orphans: HashMap<String, Vec<Arc<PodInfo>>>,
    /// Pod key to the node it is accounted on.
    pod_nodes: HashMap<String, String>,
    /// How many nodes carry pods with affinity.
    pub nodes_with_affinity_pods: usize,
    /// Pending pods nominated to a node by preemption, by node name.
    pub nominated: HashMap<String, Vec<Arc<PodInfo>>>,
}

impl Snapshot {
    /// Builds a snapshot from nodes and the pods bound to them.
    pub fn new(nodes: Vec<Node>, pods: Vec<Pod>) -> Snapshot {
        let mut s = Snapshot::default();
        for n in nodes {
            s.upsert_node(Arc::new(n));
        }
        for p in pods {
            let p = Arc::new(PodInfo::new(Arc::new(p)));
            if let Some(n) = p.node_name.clone() {
                s.add_pod(&n, p);
            }
        }
        s
    }

    /// A node by name.
    pub fn get(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    /// The index of a node by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Adds or updates a node.
    pub fn upsert_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(i) = self.index.get(&name).copied() {
            let old: Vec<String> = self.nodes[i].images.keys().cloned().collect();
            self.forget_images(&old);
            self.nodes[i].set_node(node);
            let new: Vec<String> = self.nodes[i].images.keys().cloned().collect();
            self.count_images(&new);
            return;
        }
        let mut ni = NodeInfo::new(node);
        let imgs: Vec<String> = ni.images.keys().cloned().collect();
        self.count_images(&imgs);
        for p in self.orphans.remove(&name).unwrap_or_default() {
            ni.add_pod(p);
        }
        if ni.pods_with_affinity > 0 {
            self.nodes_with_affinity_pods += 1;
        }
        self.index.insert(name, self.nodes.len());
        self.nodes.push(ni);
    }

    /// Removes a node; its pods stay accounted and return if the node comes back.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        let ni = self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.index.insert(moved, i);
        }
        let imgs: Vec<String> = ni.images.keys().cloned().collect();
        self.forget_images(&imgs);
        if ni.pods_with_affinity > 0 {
            self.nodes_with_affinity_pods -= 1;
        }
        if !ni.pods.is_empty() {
            self.orphans.insert(name.to_string(), ni.pods);
        }
    }

    fn count_images(&mut self, names: &[String]) {
        for n in names {
            *self.image_nodes.entry(n.clone()).or_default() += 1;
        }
    }

    fn forget_images(&mut self, names: &[String]) {
        for n in names {
            if let Some(c) = self.image_nodes.get_mut(n) {
                *c -= 1;
                if *c == 0 {
                    self.image_nodes.remove(n);
                }
            }
        }
    }

    /// Accounts a pod to a node (replacing an earlier record of the same pod).
    pub fn add_pod(&mut self, node: &str, p: Arc<PodInfo>) {
        self.remove_pod(&p.key.clone());
        self.pod_nodes.insert(p.key.clone(), node.to_string());
        match self.index.get(node).copied() {
            Some(i) => {
                let ni = &mut self.nodes[i];
                let before = ni.pods_with_affinity > 0;
                ni.add_pod(p);
                if !before && ni.pods_with_affinity > 0 {
                    self.nodes_with_affinity_pods += 1;
                }
            }
            None => self.orphans.entry(node.to_string()).or_default().push(p),
        }
    }

    /// Removes a pod by `namespace/name`, returning it.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let node = self.pod_nodes.remove(key)?;
        match self.index.get(&node).copied() {
            Some(i) => {
                let ni = &mut self.nodes[i];
                let uid = ni.pods.iter().find(|p| p.key == key)?.uid.clone();
                let before = ni.pods_with_affinity > 0;
                let p = ni.remove_pod(&uid);
                if before && ni.pods_with_affinity == 0 {
                    self.nodes_with_affinity_pods -= 1;
                }
                p
            }
            None => {
                let list = self.orphans.get_mut(&node)?;
                let i = list.iter().position(|p| p.key == key)?;
                Some(list.swap_remove(i))
            }
        }
    }

    /// The node a pod is accounted on.
    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.pod_nodes.get(key).map(|s| s.as_str())
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}
