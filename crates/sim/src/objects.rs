//! The objects a simulated kubelet writes, as pure functions: the Node it registers, its
//! conditions, its Lease, and the status of a pod it "runs".

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use crate::ipam::Cidr;
use crate::SimConfig;

/// The kubelet version simulated nodes report.
pub const KUBELET_VERSION: &str = "v1.32.0-skiff-sim";
/// The container runtime version simulated nodes report.
pub const RUNTIME_VERSION: &str = "sim://1.0";
/// The label that stops a node's heartbeats while it is `true` (see the crate docs).
pub const STOPPED_LABEL: &str = "skiff.dev/sim-stopped";
/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// A `metav1.Time`: seconds precision, UTC.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A `metav1.MicroTime`: microseconds precision, UTC.
pub fn micro_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The name of node `index`.
pub fn node_name(prefix: &str, index: usize) -> String {
    format!("{prefix}{index}")
}

/// The pod CIDR node `index` gets when nothing assigned one: `10.42.<i>.0/24` for the first
/// 256 nodes, then consecutive /24s from `10.44.0.0` on (10.43.0.0/16 is the service range
/// by convention, so it is skipped).
pub fn default_pod_cidr(index: usize) -> Cidr {
    let base = if index < 256 {
        u32::from(Ipv4Addr::new(10, 42, 0, 0)) + (index as u32) * 256
    } else {
        u32::from(Ipv4Addr::new(10, 44, 0, 0)) + (index as u32 - 256) * 256
    };
    Cidr {
        base: Ipv4Addr::from(base),
        prefix: 24,
    }
}

/// The InternalIP of node `index`, from `10.200.0.0/16` on. Nothing ever connects to it.
pub fn internal_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + index as u32 + 1)
}

/// The node's conditions as a kubelet that is healthy reports them. A condition whose status
/// is unchanged from `previous` keeps its `lastTransitionTime`.
pub fn conditions(now: DateTime<Utc>, previous: Option<&Value>) -> Value {
    let now = time(now);
    let list = [
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        (
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ];
    Value::Array(
        list.iter()
            .map(|(ty, status, reason, message)| {
                let transition = previous
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|c| c["type"] == *ty))
                    .filter(|c| c["status"] == *status)
                    .and_then(|c| c["lastTransitionTime"].as_str())
                    .unwrap_or(&now)
                    .to_string();
                json!({
                    "type": ty, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": transition,
                })
            })
            .collect(),
    )
}

/// The Node a simulated kubelet registers.
pub fn node(
    cfg: &SimConfig,
    index: usize,
    cidr: Option<Cidr>,
    now: DateTime<Utc>,
) -> Result<Value, serde_json::Error> {
    let name = node_name(&cfg.name_prefix, index);
    let mut labels = serde_json::Map::new();
    for (k, v) in [
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/hostname", name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("type", "sim"),
    ] {
        labels.insert(k.into(), json!(v));
    }
    for (k, v) in &cfg.labels {
        labels.insert(k.clone(), json!(v));
    }
    let resources = json!({
        "cpu": cfg.cpu, "memory": cfg.memory, "pods": cfg.pods.to_string(),
        "ephemeral-storage": cfg.ephemeral_storage,
        "hugepages-1Gi": "0", "hugepages-2Mi": "0",
    });
    let mut spec = json!({});
    if let Some(c) = cidr {
        spec["podCIDR"] = json!(c.to_string());
        spec["podCIDRs"] = json!([c.to_string()]);
    }
    if !cfg.taints.is_empty() {
        spec["taints"] = serde_json::to_value(&cfg.taints)?;
    }
    let id = format!("{:032x}", hash128(&name));
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
        },
        "spec": spec,
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [
                {"type": "InternalIP", "address": internal_ip(index).to_string()},
                {"type": "Hostname", "address": name},
            ],
            "conditions": conditions(now, None),
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": id, "systemUUID": id, "bootID": id,
                "kernelVersion": "6.1.0-sim", "osImage": "skiff simulated node",
                "containerRuntimeVersion": RUNTIME_VERSION, "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    }))
}

/// The Lease a kubelet keeps for its node, owned by the node so that it goes with it.
pub fn lease(node: &str, node_uid: Option<&str>, duration: i32, now: DateTime<Utc>) -> Value {
    let mut l = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": node, "namespace": LEASE_NAMESPACE},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": duration, "renewTime": micro_time(now)},
    });
    if let Some(uid) = node_uid {
        l["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]);
    }
    l
}

/// The merge patch that renews a lease.
pub fn renew_patch(node: &str, duration: i32, now: DateTime<Utc>) -> Value {
    json!({"spec": {"holderIdentity": node, "leaseDurationSeconds": duration, "renewTime": micro_time(now)}})
}

fn hash128(s: &str) -> u128 {
    let mut a = DefaultHasher::new();
    (0u8, s).hash(&mut a);
    let mut b = DefaultHasher::new();
    (1u8, s).hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// The status a kubelet reports once every container of `pod` runs: phase Running, the
/// conditions true, the pod and host IPs, container statuses. A condition the pod already
/// has with the same status keeps its transition time.
pub fn running_status(pod: &Pod, host_ip: Ipv4Addr, pod_ip: Ipv4Addr, now: DateTime<Utc>) -> Value {
    let now_s = time(now);
    let status = pod.status.as_ref();
    let start = status
        .and_then(|s| s.start_time.as_ref())
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or_else(|| json!(now_s));
    let old_conds = status.and_then(|s| s.conditions.as_ref());
    let cond = |ty: &str| {
        let since = old_conds
            .and_then(|cs| cs.iter().find(|c| c.type_ == ty && c.status == "True"))
            .and_then(|c| c.last_transition_time.as_ref())
            .and_then(|t| serde_json::to_value(t).ok())
            .unwrap_or_else(|| json!(now_s));
        json!({"type": ty, "status": "True", "lastProbeTime": null, "lastTransitionTime": since})
    };
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let container_id = |name: &str| format!("sim://{:032x}", hash128(&format!("{uid}/{name}")));
    let spec = pod.spec.as_ref();
    let containers: Vec<Value> = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            json!({
                "name": c.name, "image": image, "imageID": format!("sim://{image}"),
                "containerID": container_id(&c.name), "ready": true, "started": true,
                "restartCount": 0, "lastState": {},
                "state": {"running": {"startedAt": start}},
            })
        })
        .collect();
    let mut out = json!({
        "phase": "Running",
        "conditions": [
            cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"),
            cond("ContainersReady"), cond("PodScheduled"),
        ],
        "hostIP": host_ip.to_string(), "hostIPs": [{"ip": host_ip.to_string()}],
        "podIP": pod_ip.to_string(), "podIPs": [{"ip": pod_ip.to_string()}],
        "startTime": start,
        "containerStatuses": containers,
    });
    let inits: Vec<Value> = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            json!({
                "name": c.name, "image": image, "imageID": format!("sim://{image}"),
                "containerID": container_id(&c.name), "ready": true, "started": false,
                "restartCount": 0, "lastState": {},
                "state": {"terminated": {
                    "exitCode": 0, "reason": "Completed",
                    "startedAt": start, "finishedAt": start,
                    "containerID": container_id(&c.name),
                }},
            })
        })
        .collect();
    if !inits.is_empty() {
        out["initContainerStatuses"] = Value::Array(inits);
    }
    if let Some(q) = status.and_then(|s| s.qos_class.as_ref()) {
        out["qosClass"] = json!(q);
    }
    out
}

/// Whether the pod already shows what [`running_status`] writes.
pub fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_addresses() {
        assert_eq!(default_pod_cidr(0).to_string(), "10.42.0.0/24");
        assert_eq!(default_pod_cidr(255).to_string(), "10.42.255.0/24");
        assert_eq!(default_pod_cidr(256).to_string(), "10.44.0.0/24");
        assert_eq!(default_pod_cidr(4999).to_string(), "10.62.135.0/24");
        assert_eq!(internal_ip(0).to_string(), "10.200.0.1");
        assert_eq!(internal_ip(300).to_string(), "10.200.1.45");
    }

    #[test]
    fn node_object_is_a_valid_ready_node() {
        let mut cfg = SimConfig::default();
        cfg.labels.insert("zone".into(), "a".into());
        cfg.taints = crate::parse_taints("dedicated=gpu:NoSchedule").unwrap();
        let n = node(&cfg, 3, Some(default_pod_cidr(3)), Utc::now()).unwrap();
        let typed: k8s_openapi::api::core::v1::Node = serde_json::from_value(n.clone()).unwrap();
        assert_eq!(typed.metadata.name.as_deref(), Some("sim-3"));
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/hostname"], "sim-3");
        assert_eq!(n["metadata"]["labels"]["type"], "sim");
        assert_eq!(n["metadata"]["labels"]["zone"], "a");
        assert_eq!(n["spec"]["podCIDR"], "10.42.3.0/24");
        assert_eq!(n["spec"]["taints"][0]["effect"], "NoSchedule");
        assert_eq!(n["status"]["capacity"]["pods"], "110");
        assert_eq!(n["status"]["allocatable"]["cpu"], "4");
        assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        let ready = n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let t0 = "2024-01-01T00:00:00Z";
        let prev = json!([
            {"type": "Ready", "status": "True", "lastTransitionTime": t0},
            {"type": "MemoryPressure", "status": "Unknown", "lastTransitionTime": t0},
        ]);
        let now = Utc::now();
        let c = conditions(now, Some(&prev));
        let get = |ty: &str| {
            c.as_array()
                .unwrap()
                .iter()
                .find(|x| x["type"] == ty)
                .unwrap()
                .clone()
        };
        assert_eq!(get("Ready")["lastTransitionTime"], t0);
        assert_eq!(get("MemoryPressure")["lastTransitionTime"], time(now));
        assert_eq!(get("Ready")["lastHeartbeatTime"], time(now));
    }

    #[test]
    fn micro_time_has_microseconds() {
        let t = DateTime::parse_from_rfc3339("2024-05-06T07:08:09.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(micro_time(t), "2024-05-06T07:08:09.123456Z");
        assert_eq!(time(t), "2024-05-06T07:08:09Z");
    }

    #[test]
    fn running_status_of_a_pod() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {
                "containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"}],
                "initContainers": [{"name": "i", "image": "busybox"}],
            },
            "status": {"phase": "Pending", "qosClass": "BestEffort", "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"},
            ]},
        }))
        .unwrap();
        assert!(!is_running(&pod));
        let s = running_status(
            &pod,
            internal_ip(0),
            "10.42.0.2".parse().unwrap(),
            Utc::now(),
        );
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.42.0.2");
        assert_eq!(s["podIPs"][0]["ip"], "10.42.0.2");
        assert_eq!(s["hostIP"], "10.200.0.1");
        assert_eq!(s["qosClass"], "BestEffort");
        let sched = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "PodScheduled")
            .unwrap();
        assert_eq!(sched["lastTransitionTime"], "2024-01-01T00:00:00Z");
        assert_eq!(s["containerStatuses"][1]["name"], "b");
        assert_eq!(s["containerStatuses"][1]["ready"], true);
        assert!(s["containerStatuses"][0]["containerID"]
            .as_str()
            .unwrap()
            .starts_with("sim://"));
        assert_eq!(
            s["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        let mut typed = pod.clone();
        typed.status = Some(serde_json::from_value(s).unwrap());
        assert!(is_running(&typed));
    }
}
