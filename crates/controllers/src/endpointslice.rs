//! The EndpointSlice controller: for every Service with a selector, IPv4 EndpointSlices
//! (at most [`MAX_ENDPOINTS_PER_SLICE`] endpoints each) listing the matching pods with
//! their ready/serving/terminating conditions, labelled and owned as upstream does.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;

use crate::runtime::{
    key_of, run_workers, split_key, ApiError, Cache, Context, Control, WorkQueue,
};

use crate::endpoints::{
    endpoint_labels, find_port, pod_hostname, pod_in_endpoints, pod_ipv4, pod_ready, pod_ref,
    selected_pods, watch_services_and_pods,
};

/// The label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// The ports of one group of endpoints, sorted.
type PortSet = Vec<(String, i32, String)>;

/// The endpoint conditions of a pod (upstream's rules): serving is the pod's readiness,
/// terminating whether it is being deleted, ready serving and not terminating, or always
/// when the Service publishes not-ready addresses.
pub fn conditions(pod: &Pod, publish_not_ready: bool) -> EndpointConditions {
    let serving = pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    EndpointConditions {
        ready: Some(publish_not_ready || (serving && !terminating)),
        serving: Some(serving),
        terminating: Some(terminating),
    }
}

/// The endpoints the Service should expose, grouped by their resolved port set and sorted
/// by address within each group.
pub fn desired_endpoints(svc: &Service, pods: &[Arc<Pod>]) -> BTreeMap<PortSet, Vec<Endpoint>> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let svc_ports = spec.ports.unwrap_or_default();
    let mut groups: BTreeMap<PortSet, Vec<Endpoint>> = BTreeMap::new();
    for pod in selected_pods(svc, pods) {
        // Terminating pods stay (with terminating=true), unlike in Endpoints.
        if !pod_in_endpoints(pod, true) {
            continue;
        }
        let Some(ip) = pod_ipv4(pod) else { continue };
        let mut ports: PortSet = svc_ports
            .iter()
            .filter_map(|sp| {
                find_port(pod, sp).map(|n| {
                    (
                        sp.name.clone().unwrap_or_default(),
                        n,
                        sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    )
                })
            })
            .collect();
        ports.sort();
        groups.entry(ports).or_default().push(Endpoint {
            addresses: vec![ip],
            conditions: Some(conditions(pod, publish)),
            hostname: pod_hostname(pod, svc),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(pod_ref(pod)),
            ..Default::default()
        });
    }
    for eps in groups.values_mut() {
        eps.sort_by(|a, b| a.addresses.cmp(&b.addresses));
    }
    groups
}

fn slice_ports(svc: &Service, ports: &PortSet) -> Vec<EndpointPort> {
    let svc_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    ports
        .iter()
        .map(|(name, port, protocol)| EndpointPort {
            name: Some(name.clone()),
            port: Some(*port),
            protocol: Some(protocol.clone()),
            app_protocol: svc_ports
                .iter()
                .find(|p| p.name.as_deref().unwrap_or("") == name)
                .and_then(|p| p.app_protocol.clone()),
        })
        .collect()
}

fn port_set(slice: &EndpointSlice) -> PortSet {
    let mut ports: PortSet = slice
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            )
        })
        .collect();
    ports.sort();
    ports
}

/// The labels of the Service's slices.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = endpoint_labels(svc);
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    labels
}

/// The controller ownerReference a slice holds to its Service.
pub fn owner_ref(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether this controller manages the slice for the Service named `service`.
pub fn managed_slice_of(slice: &EndpointSlice, service: &str) -> bool {
    let labels = slice.metadata.labels.as_ref();
    labels
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(CONTROLLER_NAME)
        && labels
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(String::as_str)
            == Some(service)
}

/// What to write so the Service's slices match the desired endpoints.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SlicePlan {
    /// New slices (named by `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Existing slices with new content (name and resourceVersion kept).
    pub update: Vec<EndpointSlice>,
    /// Names of slices no longer needed.
    pub delete: Vec<String>,
}

impl SlicePlan {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Plans the writes that make `existing` (the Service's managed slices) hold the desired
/// endpoints: each port group is cut into chunks of at most `max_per_slice`, existing slices
/// of the same port group are reused in name order, the rest created or deleted. A Service
/// with no endpoints keeps one empty placeholder slice, as upstream does.
pub fn plan(
    svc: &Service,
    pods: &[Arc<Pod>],
    existing: &[Arc<EndpointSlice>],
    max_per_slice: usize,
) -> SlicePlan {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let labels = slice_labels(svc);
    let owner = owner_ref(svc);
    let mut groups = desired_endpoints(svc, pods);
    if groups.is_empty() {
        groups.insert(Vec::new(), Vec::new());
    }
    let mut existing: Vec<&EndpointSlice> = existing
        .iter()
        .map(Arc::as_ref)
        .filter(|s| managed_slice_of(s, &name) && s.address_type == "IPv4")
        .collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut used = vec![false; existing.len()];
    let mut out = SlicePlan::default();
    for (ports, eps) in groups {
        let chunks: Vec<Vec<Endpoint>> = if eps.is_empty() {
            vec![Vec::new()]
        } else {
            eps.chunks(max_per_slice.max(1))
                .map(<[_]>::to_vec)
                .collect()
        };
        let ep_ports = slice_ports(svc, &ports);
        for chunk in chunks {
            // Prefer a slice with the same ports; else recycle any spare one rather than
            // creating and deleting.
            let reuse = existing
                .iter()
                .enumerate()
                .position(|(i, s)| !used[i] && port_set(s) == ports)
                .or_else(|| (0..existing.len()).find(|i| !used[*i]));
            let body = |meta: ObjectMeta| EndpointSlice {
                metadata: meta,
                address_type: "IPv4".into(),
                endpoints: chunk.clone(),
                ports: Some(ep_ports.clone()),
            };
            match reuse {
                Some(i) => {
                    used[i] = true;
                    let cur = existing[i];
                    let mut meta = cur.metadata.clone();
                    meta.labels = Some(labels.clone());
                    meta.owner_references = Some(vec![owner.clone()]);
                    meta.managed_fields = None;
                    let want = body(meta);
                    let same = cur.endpoints == want.endpoints
                        && cur.ports.clone().unwrap_or_default() == ep_ports
                        && cur.metadata.labels.clone().unwrap_or_default() == labels
                        && cur.metadata.owner_references.clone().unwrap_or_default()
                            == vec![owner.clone()];
                    if !same {
                        out.update.push(want);
                    }
                }
                None => out.create.push(body(ObjectMeta {
                    generate_name: Some(format!("{name}-")),
                    namespace: svc.metadata.namespace.clone(),
                    labels: Some(labels.clone()),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                })),
            }
        }
    }
    for (i, s) in existing.iter().enumerate() {
        if !used[i] {
            out.delete.push(s.metadata.name.clone().unwrap_or_default());
        }
    }
    out
}

/// Syncs the EndpointSlices of the Service with key `key`. A deleted Service's slices are
/// left to the garbage collector (they are owned by it), as upstream does.
pub async fn sync(
    control: &dyn Control,
    key: &str,
    services: &Cache<Service>,
    pods: &Cache<Pod>,
    slices: &Cache<EndpointSlice>,
) -> Result<(), ApiError> {
    let (ns, name) = split_key(key);
    let Some(svc) = services.get(ns, name) else {
        return Ok(());
    };
    if svc.metadata.deletion_timestamp.is_some()
        || svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_none()
    {
        return Ok(());
    }
    let existing: Vec<Arc<EndpointSlice>> = slices
        .list(ns)
        .into_iter()
        .filter(|s| managed_slice_of(s, name))
        .collect();
    let p = plan(&svc, &pods.list(ns), &existing, MAX_ENDPOINTS_PER_SLICE);
    for s in &p.update {
        control.update_obj(s).await?;
    }
    for s in &p.create {
        control.create_obj(s).await?;
    }
    for n in &p.delete {
        match control.delete_obj::<EndpointSlice>(ns, n, None).await {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Runs the EndpointSlice controller until dropped.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let services = ctx.informers.cache::<Service>();
    let pods = ctx.informers.cache::<Pod>();
    let slices = ctx.informers.cache::<EndpointSlice>();
    let queue = WorkQueue::default();
    watch_services_and_pods(&queue, &services, &pods);
    let q = queue.clone();
    slices.add_handler(move |c| {
        let o = c.object();
        let managed =
            o.metadata.labels.as_ref().is_some_and(|l| {
                l.get(MANAGED_BY_LABEL).map(String::as_str) == Some(CONTROLLER_NAME)
            });
        let svc = o
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        if let (true, Some(svc), Some(ns)) = (managed, svc, o.metadata.namespace.as_ref()) {
            q.add(format!("{ns}/{svc}"));
        }
    });
    ctx.informers.wait_for_sync().await;
    for s in services.list_all() {
        queue.add(key_of(s.as_ref()));
    }
    let control = ctx.control.clone();
    run_workers("endpointslice", queue, ctx.config.workers, move |key| {
        let (control, services, pods, slices) = (
            control.clone(),
            services.clone(),
            pods.clone(),
            slices.clone(),
        );
        async move {
            sync(control.as_ref(), &key, &services, &pods, &slices).await?;
            Ok(None)
        }
    })
    .await;
    Ok(())
}
