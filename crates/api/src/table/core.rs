//! Printers of the core (`""`) group.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::format::{
    age, arr_at, bool_at, container_cells, format_labels, get, int_at, map_len, opt_str,
    parse_time, quantity, since, str_at, time_at,
};
use super::{col, wide, Printer, AGE, IMAGES, NAME};

pub(super) fn printer(kind: &str) -> Option<&'static Printer> {
    Some(match kind {
        "Pod" => &super::pod::POD,
        "PodTemplate" => &POD_TEMPLATE,
        "ReplicationController" => &RC,
        "Service" => &SERVICE,
        "Endpoints" => &ENDPOINTS,
        "Node" => &NODE,
        "Event" => &EVENT,
        "Namespace" => &NAMESPACE,
        "Secret" => &SECRET,
        "ServiceAccount" => &SERVICE_ACCOUNT,
        "PersistentVolume" => &PV,
        "PersistentVolumeClaim" => &PVC,
        "ConfigMap" => &CONFIG_MAP,
        "ResourceQuota" => &RESOURCE_QUOTA,
        _ => return None,
    })
}

fn name(obj: &Value) -> Value {
    json!(str_at(obj, &["metadata", "name"]))
}

// ---- PodTemplate ----

const POD_TEMPLATE: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Containers",
            "string",
            "Names of each container in the template.",
        ),
        col(
            "Images",
            "string",
            "Images referenced by each container in the template.",
        ),
        col("Pod Labels", "string", "The labels for the pod template."),
    ],
    cells: |obj, _now| {
        let (names, images) = container_cells(arr_at(obj, &["template", "spec", "containers"]));
        vec![
            name(obj),
            json!(names),
            json!(images),
            json!(format_labels(get(obj, &["template", "metadata", "labels"]))),
        ]
    },
    conditions: None,
};

// ---- ReplicationController ----

const RC: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#what-is-a-replicationcontroller"),
        col("Current", "integer", "Replicas is the most recently observed number of replicas. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#what-is-a-replicationcontroller"),
        col("Ready", "integer", "The number of ready replicas for this replication controller."),
        AGE,
        super::CONTAINERS,
        IMAGES,
        wide("Selector", "string", "Selector is a label query over pods that should match the Replicas count. If Selector is empty, it is defaulted to the labels present on the Pod template. Label keys and values that must match in order to be controlled by this replication controller, if empty defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
    ],
    cells: |obj, now| {
        let (names, images) =
            container_cells(arr_at(obj, &["spec", "template", "spec", "containers"]));
        vec![
            name(obj),
            json!(super::format::opt_int(obj, &["spec", "replicas"]).unwrap_or(1)),
            json!(int_at(obj, &["status", "replicas"])),
            json!(int_at(obj, &["status", "readyReplicas"])),
            json!(age(obj, now)),
            json!(names),
            json!(images),
            json!(format_labels(get(obj, &["spec", "selector"]))),
        ]
    },
    conditions: None,
};

// ---- Service ----

const SERVICE: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types"),
        col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies"),
        col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system."),
        col("Port(s)", "string", "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies"),
        AGE,
        wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/"),
    ],
    cells: service_cells,
    conditions: None,
};

/// Upstream's `loadBalancerStatusStringer` with `wide` set, as the server prints it: the sorted,
/// de-duplicated ingress IPs (or hostnames).
pub(super) fn load_balancer_ingress(ingress: &[Value]) -> String {
    let set: BTreeSet<&str> = ingress
        .iter()
        .filter_map(|i| {
            let ip = str_at(i, &["ip"]);
            let host = str_at(i, &["hostname"]);
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = arr_at(svc, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match str_at(svc, &["spec", "type"]) {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(arr_at(svc, &["status", "loadBalancer", "ingress"]));
            if !external.is_empty() {
                let mut all: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    all.extend(lb.split(','));
                }
                all.extend(external);
                return all.join(",");
            }
            if lb.is_empty() {
                "<pending>".to_string()
            } else {
                lb
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn service_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let cluster_ip = arr_at(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let ports: Vec<String> = arr_at(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]);
            let proto = str_at(p, &["protocol"]);
            let node_port = int_at(p, &["nodePort"]);
            if node_port > 0 {
                format!("{port}:{node_port}/{proto}")
            } else {
                format!("{port}/{proto}")
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        name(svc),
        json!(str_at(svc, &["spec", "type"])),
        json!(cluster_ip),
        json!(service_external_ip(svc)),
        json!(ports),
        json!(age(svc, now)),
        json!(format_labels(get(svc, &["spec", "selector"]))),
    ]
}

// ---- Endpoints ----

const ENDPOINTS: Printer = Printer {
    columns: &[
        NAME,
        col("Endpoints", "string", "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service."),
        AGE,
    ],
    cells: |obj, now| vec![name(obj), json!(format_endpoints(obj)), json!(age(obj, now))],
    conditions: None,
};

/// `net.JoinHostPort`: brackets around IPv6 hosts.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream's `formatEndpoints` with all ports: the first three `ip:port`, then `+ N more...`.
fn format_endpoints(ep: &Value) -> String {
    let subsets = arr_at(ep, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = arr_at(ss, &["addresses"]);
        let ports = arr_at(ss, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(a, &["ip"]).to_string());
            }
            continue;
        }
        for p in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_at(a, &["ip"]), int_at(p, &["port"])));
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count - MAX)
    } else {
        ret
    }
}

// ---- Node ----

const NODE: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "The status of the node"),
        col("Roles", "string", "The roles of the node"),
        AGE,
        col("Version", "string", "Kubelet Version reported by the node."),
        wide("Internal-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP)."),
        wide("External-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP)."),
        wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
        wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
        wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
    ],
    cells: node_cells,
    conditions: None,
};

fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // A later condition of the same type wins, as upstream's condition map does.
    let ready = arr_at(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready");
    let mut status: Vec<&str> = vec![match ready {
        Some(c) if str_at(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if bool_at(node, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled");
    }
    let mut roles: BTreeSet<String> = BTreeSet::new();
    if let Some(labels) = get(node, &["metadata", "labels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.insert(v.to_string());
                }
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };
    let address = |ty: &str| {
        arr_at(node, &["status", "addresses"])
            .iter()
            .find(|a| str_at(a, &["type"]) == ty)
            .map_or("<none>".to_string(), |a| {
                str_at(a, &["address"]).to_string()
            })
    };
    let info = |field: &str| {
        let v = str_at(node, &["status", "nodeInfo", field]);
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        name(node),
        json!(status.join(",")),
        json!(roles),
        json!(age(node, now)),
        json!(str_at(node, &["status", "nodeInfo", "kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

// ---- Event ----

const EVENT: Printer = Printer {
    columns: &[
        col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
        col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
        col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
        col("Object", "string", "The object that this event is about."),
        wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object."),
        wide("Source", "string", "The component reporting this event. Should be a short machine understandable string."),
        col("Message", "string", "A human-readable description of the status of this operation."),
        wide("First Seen", "string", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
        wide("Count", "string", "The number of times this event has occurred."),
        super::Col {
            name: "Name",
            ty: "string",
            format: "name",
            description: super::NAME_DOC,
            priority: 1,
        },
    ],
    cells: event_cells,
    conditions: None,
};

fn event_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // events.k8s.io objects print through the core shape, as upstream's internal type does.
    let converted;
    let ev = if obj.get("regarding").is_some()
        || obj.get("note").is_some()
        || str_at(obj, &["apiVersion"]).starts_with("events.k8s.io/")
    {
        converted = crate::convert::events_to_core(obj.clone());
        &converted
    } else {
        obj
    };
    let micro_since = |path: &[&str]| since(opt_str(ev, path).and_then(parse_time), now);
    let first = match time_at(ev, &["firstTimestamp"]) {
        Some(t) => since(Some(t), now),
        None => micro_since(&["eventTime"]),
    };
    let mut last = match time_at(ev, &["lastTimestamp"]) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int_at(ev, &["count"]);
    if get(ev, &["series"]).is_some_and(|s| !s.is_null()) {
        last = micro_since(&["series", "lastObservedTime"]);
        count = int_at(ev, &["series", "count"]);
    } else if count == 0 {
        count = 1;
    }
    let kind = str_at(ev, &["involvedObject", "kind"]).to_lowercase();
    let obj_name = str_at(ev, &["involvedObject", "name"]);
    let target = if obj_name.is_empty() {
        kind
    } else {
        format!("{kind}/{obj_name}")
    };
    let first_non_empty = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_string()
        } else {
            a.to_string()
        }
    };
    let component = first_non_empty(
        str_at(ev, &["source", "component"]),
        str_at(ev, &["reportingComponent"]),
    );
    let instance = first_non_empty(
        str_at(ev, &["source", "host"]),
        str_at(ev, &["reportingInstance"]),
    );
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(str_at(ev, &["type"])),
        json!(str_at(ev, &["reason"])),
        json!(target),
        json!(str_at(ev, &["involvedObject", "fieldPath"])),
        json!(source),
        json!(str_at(ev, &["message"]).trim()),
        json!(first),
        json!(count),
        json!(str_at(ev, &["metadata", "name"])),
    ]
}

// ---- Namespace, Secret, ServiceAccount, ConfigMap ----

const NAMESPACE: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "The status of the namespace"),
        AGE,
    ],
    cells: |obj, now| {
        vec![
            name(obj),
            json!(str_at(obj, &["status", "phase"])),
            json!(age(obj, now)),
        ]
    },
    conditions: None,
};

const SECRET: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types"),
        col("Data", "string", "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4"),
        AGE,
    ],
    cells: |obj, now| {
        vec![
            name(obj),
            json!(str_at(obj, &["type"])),
            json!(map_len(obj, &["data"])),
            json!(age(obj, now)),
        ]
    },
    conditions: None,
};

const SERVICE_ACCOUNT: Printer = Printer {
    columns: &[
        NAME,
        col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret"),
        AGE,
    ],
    cells: |obj, now| {
        vec![
            name(obj),
            json!(arr_at(obj, &["secrets"]).len()),
            json!(age(obj, now)),
        ]
    },
    conditions: None,
};

const CONFIG_MAP: Printer = Printer {
    columns: &[
        NAME,
        col("Data", "string", "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process."),
        AGE,
    ],
    cells: |obj, now| {
        vec![
            name(obj),
            json!(map_len(obj, &["data"]) + map_len(obj, &["binaryData"])),
            json!(age(obj, now)),
        ]
    },
    conditions: None,
};

// ---- PersistentVolume, PersistentVolumeClaim ----

/// `helper.GetAccessModesAsString`: RWO, ROX, RWX, RWOP in that order.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| has(m))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

fn storage_class(obj: &Value) -> String {
    if let Some(c) =
        get(obj, &["metadata", "annotations", BETA_STORAGE_CLASS]).and_then(Value::as_str)
    {
        return c.to_string();
    }
    str_at(obj, &["spec", "storageClassName"]).to_string()
}

fn deleting(obj: &Value) -> bool {
    get(obj, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null())
}

fn unset_or(v: Option<&str>) -> String {
    v.map_or("<unset>".to_string(), str::to_string)
}

const PV: Printer = Printer {
    columns: &[
        NAME,
        col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity"),
        col("Access Modes", "string", "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes"),
        col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming"),
        col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase"),
        col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding"),
        col("StorageClass", "string", "StorageClass of the pv"),
        col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
        col("Reason", "string", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
        AGE,
        wide("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec."),
    ],
    cells: |pv, now| {
        let claim = match get(pv, &["spec", "claimRef"]).filter(|c| c.is_object()) {
            Some(c) => format!("{}/{}", str_at(c, &["namespace"]), str_at(c, &["name"])),
            None => String::new(),
        };
        let phase = if deleting(pv) {
            "Terminating"
        } else {
            str_at(pv, &["status", "phase"])
        };
        vec![
            name(pv),
            json!(quantity(get(pv, &["spec", "capacity", "storage"]))),
            json!(access_modes(arr_at(pv, &["spec", "accessModes"]))),
            json!(str_at(pv, &["spec", "persistentVolumeReclaimPolicy"])),
            json!(phase),
            json!(claim),
            json!(storage_class(pv)),
            json!(unset_or(opt_str(pv, &["spec", "volumeAttributesClassName"]))),
            json!(str_at(pv, &["status", "reason"])),
            json!(age(pv, now)),
            json!(unset_or(opt_str(pv, &["spec", "volumeMode"]))),
        ]
    },
    conditions: None,
};

const PVC: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
        col("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
        col("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
        col("Access Modes", "string", "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1"),
        col("StorageClass", "string", "StorageClass of the pvc"),
        col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
        AGE,
        wide("VolumeMode", "string", "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec."),
    ],
    cells: |pvc, now| {
        let phase = if deleting(pvc) {
            "Terminating"
        } else {
            str_at(pvc, &["status", "phase"])
        };
        let volume = str_at(pvc, &["spec", "volumeName"]);
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            (
                quantity(get(pvc, &["status", "capacity", "storage"])),
                access_modes(arr_at(pvc, &["status", "accessModes"])),
            )
        };
        vec![
            name(pvc),
            json!(phase),
            json!(volume),
            json!(capacity),
            json!(modes),
            json!(storage_class(pvc)),
            json!(unset_or(opt_str(pvc, &["spec", "volumeAttributesClassName"]))),
            json!(age(pvc, now)),
            json!(unset_or(opt_str(pvc, &["spec", "volumeMode"]))),
        ]
    },
    conditions: None,
};

// ---- ResourceQuota ----

const RESOURCE_QUOTA: Printer = Printer {
    columns: &[
        NAME,
        AGE,
        col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
        col("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
    ],
    cells: |rq, now| {
        let mut request: Vec<String> = Vec::new();
        let mut limit: Vec<String> = Vec::new();
        if let Some(hard) = get(rq, &["status", "hard"]).and_then(Value::as_object) {
            let mut names: Vec<&String> = hard.keys().collect();
            names.sort();
            for res in names {
                let used = quantity(get(rq, &["status", "used", res.as_str()]));
                let text = format!("{res}: {used}/{}", quantity(hard.get(res)));
                let pieces: Vec<&str> = res.split('.').collect();
                if pieces.len() > 1 && pieces[0] == "limits" {
                    limit.push(text);
                } else {
                    request.push(text);
                }
            }
        }
        vec![
            name(rq),
            json!(age(rq, now)),
            json!(request.join(", ")),
            json!(limit.join(", ")),
        ]
    },
    conditions: None,
};
