//! The Endpoints controller: keeps one `Endpoints` object per Service with a selector, listing
//! the IPs of the matching pods (ready ones in `addresses`, the others in
//! `notReadyAddresses`) with the Service's ports resolved against each pod's containers.
//!
//! Services without a selector (such as `default/kubernetes`, whose endpoints the API server
//! owns) are left alone, as upstream does.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use crate::runtime::{
    key_of, run_workers, split_key, ApiError, Cache, Change, Context, Control, WorkQueue,
};

/// Label marking the endpoints of a headless Service.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Whether the pod's `Ready` condition is `True`.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the pod has finished (phase `Succeeded` or `Failed`).
pub fn pod_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// The pod's IPv4 address: the first IPv4 entry of `status.podIPs`, else `status.podIP`.
pub fn pod_ipv4(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let from_list = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .find(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok());
    from_list
        .or(status
            .pod_ip
            .as_deref()
            .filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()))
        .map(str::to_string)
}

/// Whether a pod belongs in a Service's endpoints at all (upstream's
/// `ShouldPodBeInEndpoints`): it has an IP, has not finished, and is not being deleted
/// unless `include_terminating`.
pub fn pod_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if pod_terminal(pod) || pod_ipv4(pod).is_none() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// Whether the Service's selector (an equality map) selects the pod.
pub fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The pods of the Service's namespace its selector picks.
pub fn selected_pods<'a>(svc: &Service, pods: &'a [Arc<Pod>]) -> Vec<&'a Pod> {
    let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Vec::new();
    };
    let ns = svc.metadata.namespace.as_deref();
    pods.iter()
        .map(|p| p.as_ref())
        .filter(|p| p.metadata.namespace.as_deref() == ns && selects(selector, p))
        .collect()
}

/// Resolves a Service port's `targetPort` against a pod (upstream's `FindPort`): a number is
/// used as is (defaulting to `port`), a name must match a container port of the same
/// protocol.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(0)) => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// A reference to the pod, as endpoints record it.
pub fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The pod's DNS hostname under the Service, when it sets `hostname` and its `subdomain` is
/// the Service's name.
pub fn pod_hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace)
        .then(|| host.to_string())
}

/// Whether the Service is headless (`clusterIP: None`).
pub fn headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The labels endpoints objects of a Service carry: the Service's own labels plus the
/// headless marker.
pub fn endpoint_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// The subsets the Service's Endpoints should hold, packed as upstream's `RepackSubsets`
/// does: addresses grouped by identical port sets, sorted by IP.
pub fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let tolerate_unready = spec.publish_not_ready_addresses.unwrap_or(false);
    let svc_ports = spec.ports.unwrap_or_default();
    // port set (sorted) -> (ready, not ready)
    type Group = (Vec<EndpointAddress>, Vec<EndpointAddress>);
    let mut groups: BTreeMap<Vec<(String, i32, String)>, Group> = BTreeMap::new();
    for pod in selected_pods(svc, pods) {
        if !pod_in_endpoints(pod, tolerate_unready) {
            continue;
        }
        let Some(ip) = pod_ipv4(pod) else { continue };
        let addr = EndpointAddress {
            ip,
            hostname: pod_hostname(pod, svc),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(pod_ref(pod)),
        };
        let mut ports: Vec<(String, i32, String)> = Vec::new();
        if svc_ports.is_empty() && !headless(svc) {
            continue;
        }
        for sp in &svc_ports {
            if let Some(n) = find_port(pod, sp) {
                ports.push((
                    sp.name.clone().unwrap_or_default(),
                    n,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ));
            }
        }
        if ports.is_empty() && !svc_ports.is_empty() {
            continue;
        }
        ports.sort();
        let entry = groups.entry(ports).or_default();
        if tolerate_unready || pod_ready(pod) {
            entry.0.push(addr);
        } else {
            entry.1.push(addr);
        }
    }
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            let app_protocol = |name: &str| {
                svc_ports
                    .iter()
                    .find(|p| p.name.as_deref().unwrap_or("") == name)
                    .and_then(|p| p.app_protocol.clone())
            };
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .into_iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            app_protocol: app_protocol(&name),
                            name: (!name.is_empty()).then_some(name),
                            port,
                            protocol: Some(protocol),
                        })
                        .collect()
                }),
            }
        })
        .collect()
}

/// The Endpoints object the Service should have, given the current one (whose metadata it
/// keeps), or `None` when the Service has no selector and its endpoints are not ours.
pub fn desired_endpoints(
    svc: &Service,
    pods: &[Arc<Pod>],
    current: Option<&Endpoints>,
) -> Option<Endpoints> {
    svc.spec.as_ref()?.selector.as_ref()?;
    let mut meta = current.map(|e| e.metadata.clone()).unwrap_or(ObjectMeta {
        name: svc.metadata.name.clone(),
        namespace: svc.metadata.namespace.clone(),
        ..Default::default()
    });
    meta.labels = Some(endpoint_labels(svc));
    meta.managed_fields = None;
    let subsets = desired_subsets(svc, pods);
    Some(Endpoints {
        metadata: meta,
        subsets: (!subsets.is_empty()).then_some(subsets),
    })
}

/// Whether two Endpoints carry the same subsets and labels (so no write is needed).
pub fn same_endpoints(a: &Endpoints, b: &Endpoints) -> bool {
    let norm = |e: &Endpoints| e.subsets.clone().filter(|s| !s.is_empty());
    norm(a) == norm(b)
        && a.metadata.labels.clone().unwrap_or_default()
            == b.metadata.labels.clone().unwrap_or_default()
}

/// Annotation of Endpoints used as leader-election locks, which are not a Service's.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// Syncs the Endpoints of the Service with key `key` (`namespace/name`): creates, updates
/// or (when the Service is gone) deletes them so they match the Service's pods.
pub async fn sync(
    control: &dyn Control,
    key: &str,
    services: &Cache<Service>,
    pods: &Cache<Pod>,
    endpoints: &Cache<Endpoints>,
) -> Result<(), ApiError> {
    let (ns, name) = split_key(key);
    let current = endpoints.get(ns, name);
    let Some(svc) = services.get(ns, name) else {
        let ours = current.as_ref().is_some_and(|e| {
            !e.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(LEADER_ANNOTATION))
        });
        if ours {
            match control.delete_obj::<Endpoints>(ns, name, None).await {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        return Ok(());
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let Some(want) = desired_endpoints(&svc, &pods.list(ns), current.as_deref()) else {
        return Ok(());
    };
    match current {
        Some(cur) if same_endpoints(&cur, &want) => Ok(()),
        Some(_) => control.update_obj(&want).await.map(drop),
        // AlreadyExists means our cache has not seen an object written earlier: the error
        // requeues the Service, so that the write is decided again once the cache has it
        // (returning Ok would leave the stale object as it is until some other change).
        None => control.create_obj(&want).await.map(drop),
    }
}

/// Queues the keys of the Services in the pod's namespace that select it.
pub(crate) fn enqueue_services_of(queue: &WorkQueue, services: &Cache<Service>, pod: &Pod) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    for svc in services.list(ns) {
        let sel = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
        if sel.is_some_and(|sel| selects(sel, pod)) {
            queue.add(key_of(svc.as_ref()));
        }
    }
}

/// Registers the pod and Service handlers shared by the Endpoints and EndpointSlice
/// controllers: a Service change queues the Service, a pod change every Service that
/// selected it before or after.
pub(crate) fn watch_services_and_pods(
    queue: &WorkQueue,
    services: &Arc<Cache<Service>>,
    pods: &Arc<Cache<Pod>>,
) {
    let q = queue.clone();
    services.add_handler(move |c| q.add(key_of(c.object().as_ref())));
    let q = queue.clone();
    let svcs = services.clone();
    pods.add_handler(move |c| {
        if let Change::Updated { old, .. } = c {
            enqueue_services_of(&q, &svcs, old);
        }
        enqueue_services_of(&q, &svcs, c.object());
    });
}

/// Runs the Endpoints controller until dropped.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let services = ctx.informers.cache::<Service>();
    let pods = ctx.informers.cache::<Pod>();
    let endpoints = ctx.informers.cache::<Endpoints>();
    let queue = WorkQueue::default();
    watch_services_and_pods(&queue, &services, &pods);
    let q = queue.clone();
    endpoints.add_handler(move |c| {
        if let Change::Deleted(e) = c {
            q.add(key_of(e.as_ref()));
        }
    });
    ctx.informers.wait_for_sync().await;
    // Also visits Endpoints left behind by Services deleted while nobody watched.
    for e in endpoints.list_all() {
        queue.add(key_of(e.as_ref()));
    }
    for s in services.list_all() {
        queue.add(key_of(s.as_ref()));
    }
    let control = ctx.control.clone();
    run_workers("endpoints", queue, ctx.config.workers, move |key| {
        let (control, services, pods, endpoints) = (
            control.clone(),
            services.clone(),
            pods.clone(),
            endpoints.clone(),
        );
        async move {
            sync(control.as_ref(), &key, &services, &pods, &endpoints).await?;
            Ok(None)
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{RecordingControl, SharedInformers, Verb};
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "d", "uid": format!("u-{name}"), "labels": {"app": "w"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    fn svc(publish: bool) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "w", "namespace": "d", "uid": "svc-uid"},
            "spec": {"selector": {"app": "w"}, "publishNotReadyAddresses": publish,
                     "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}
        }))
        .unwrap()
    }

    type Caches = (Arc<Cache<Service>>, Arc<Cache<Pod>>, Arc<Cache<Endpoints>>);

    /// Empty caches with the Service `d/w` in place.
    fn caches() -> Caches {
        let inf = SharedInformers::new(None);
        let services = inf.cache::<Service>();
        services.apply(svc(false));
        (services, inf.cache::<Pod>(), inf.cache::<Endpoints>())
    }

    #[tokio::test]
    async fn ready_and_not_ready_addresses_with_named_ports() {
        let (services, pods, eps) = caches();
        pods.apply(pod("a", "10.0.0.2", true));
        pods.apply(pod("b", "10.0.0.1", false));
        let rc = RecordingControl::new();
        sync(&rc, "d/w", &services, &pods, &eps).await.unwrap();
        let created = rc.of(Verb::Create, "Endpoints");
        assert_eq!(created.len(), 1);
        let e: Endpoints = serde_json::from_value(created[0].object.clone().unwrap()).unwrap();
        let s = &e.subsets.clone().unwrap()[0];
        assert_eq!(s.addresses.as_ref().unwrap()[0].ip, "10.0.0.2");
        assert_eq!(
            s.addresses.as_ref().unwrap()[0].node_name.as_deref(),
            Some("n1")
        );
        assert_eq!(s.not_ready_addresses.as_ref().unwrap()[0].ip, "10.0.0.1");
        assert_eq!(s.ports.as_ref().unwrap()[0].port, 8080);
        // Unchanged: no write.
        eps.apply(e);
        rc.clear();
        sync(&rc, "d/w", &services, &pods, &eps).await.unwrap();
        assert!(rc.actions().is_empty());
        // publishNotReadyAddresses: every pod is an address.
        let subsets = desired_subsets(&svc(true), &pods.list("d"));
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 2);
        // Service gone: its endpoints go.
        services.delete(svc(false));
        sync(&rc, "d/w", &services, &pods, &eps).await.unwrap();
        assert_eq!(rc.count(Verb::Delete, "Endpoints"), 1);
    }

    #[tokio::test]
    async fn a_create_racing_a_lagging_cache_is_retried() {
        let (services, pods, eps) = caches();
        pods.apply(pod("a", "10.0.0.2", true));
        let rc = RecordingControl::new();
        rc.fail(
            Verb::Create,
            ApiError::Status {
                code: 409,
                reason: "AlreadyExists".into(),
                message: "endpoints \"w\" already exists".into(),
            },
        );
        let r = sync(&rc, "d/w", &services, &pods, &eps).await;
        assert!(
            r.is_err_and(|e| e.is_already_exists()),
            "the key must be retried"
        );
    }

    #[test]
    fn selectorless_services_are_left_alone() {
        let mut s = svc(false);
        s.spec.as_mut().unwrap().selector = None;
        assert!(desired_endpoints(&s, &[], None).is_none());
    }

    #[test]
    fn slices_carry_conditions_labels_owner_and_split_at_the_limit() {
        use crate::endpointslice::{plan, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
        let mut pods: Vec<Arc<Pod>> = (0..5)
            .map(|i| Arc::new(pod(&format!("p{i}"), &format!("10.0.0.{i}"), i % 2 == 0)))
            .collect();
        let mut terminating = pod("t", "10.0.1.1", true);
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        pods.push(Arc::new(terminating));
        let p = plan(&svc(false), &pods, &[], 4);
        assert_eq!(p.create.len(), 2);
        let s = &p.create[0];
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.endpoints.len(), 4);
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "w");
        assert_eq!(labels[MANAGED_BY_LABEL], "endpointslice-controller.k8s.io");
        assert_eq!(
            s.metadata.owner_references.as_ref().unwrap()[0].uid,
            "svc-uid"
        );
        let all: Vec<_> = p.create.iter().flat_map(|s| s.endpoints.clone()).collect();
        let t = all.iter().find(|e| e.addresses[0] == "10.0.1.1").unwrap();
        let c = t.conditions.clone().unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
        // Reapplying onto the created slices writes nothing.
        let existing: Vec<Arc<EndpointSlice>> = p
            .create
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut s = s.clone();
                s.metadata.name = Some(format!("w-{i}"));
                Arc::new(s)
            })
            .collect();
        assert!(plan(&svc(false), &pods, &existing, 4).is_empty());
        // No pods: one empty placeholder; the extra slice goes.
        let p = plan(&svc(false), &[], &existing, 4);
        assert_eq!((p.update.len(), p.delete.len()), (1, 1));
        assert!(p.update[0].endpoints.is_empty());
    }

    use k8s_openapi::api::discovery::v1::EndpointSlice;
}
