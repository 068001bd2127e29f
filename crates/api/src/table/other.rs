//! Printers of the remaining groups: coordination, discovery, networking, policy, scheduling and
//! storage.

use serde_json::{json, Value};

use super::format::{
    age, arr_at, bool_at, format_label_selector, get, int_at, int_or_string, list_with_more,
    opt_int, opt_str, str_at,
};
use super::{col, Printer, AGE, NAME};

pub(super) fn printer(group: &str, kind: &str) -> Option<&'static Printer> {
    Some(match (group, kind) {
        ("coordination.k8s.io", "Lease") => &LEASE,
        ("discovery.k8s.io", "EndpointSlice") => &ENDPOINT_SLICE,
        ("networking.k8s.io", "Ingress") => &INGRESS,
        ("networking.k8s.io", "IngressClass") => &INGRESS_CLASS,
        ("networking.k8s.io", "NetworkPolicy") => &NETWORK_POLICY,
        ("policy", "PodDisruptionBudget") => &PDB,
        ("scheduling.k8s.io", "PriorityClass") => &PRIORITY_CLASS,
        ("storage.k8s.io", "StorageClass") => &STORAGE_CLASS,
        _ => return None,
    })
}

fn name(obj: &Value) -> Value {
    json!(str_at(obj, &["metadata", "name"]))
}

const LEASE: Printer = Printer {
    columns: &[
        NAME,
        col("Holder", "string", "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field."),
        AGE,
    ],
    cells: |l, now| {
        vec![
            name(l),
            json!(str_at(l, &["spec", "holderIdentity"])),
            json!(age(l, now)),
        ]
    },
    conditions: None,
};

const ENDPOINT_SLICE: Printer = Printer {
    columns: &[
        NAME,
        col("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name."),
        col("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. When ports is empty, it indicates that there are no defined ports. When a port is defined with a nil port value, it indicates \"all ports\". Each slice may include a maximum of 100 ports."),
        col("Endpoints", "string", "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints."),
        AGE,
    ],
    cells: |s, now| {
        const MAX: usize = 3;
        let ports = arr_at(s, &["ports"]);
        let port_list: Vec<String> = ports
            .iter()
            .take(MAX)
            .map(|p| match (opt_int(p, &["port"]), opt_str(p, &["name"])) {
                (Some(n), _) => n.to_string(),
                (None, Some(n)) => n.to_string(),
                (None, None) => "*".to_string(),
            })
            .collect();
        let addresses: Vec<String> = arr_at(s, &["endpoints"])
            .iter()
            .flat_map(|e| arr_at(e, &["addresses"]).iter())
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        let address_list: Vec<String> = addresses.iter().take(MAX).cloned().collect();
        vec![
            name(s),
            json!(str_at(s, &["addressType"])),
            json!(list_with_more(&port_list, ports.len() > MAX, ports.len(), MAX)),
            json!(list_with_more(
                &address_list,
                addresses.len() > MAX,
                addresses.len(),
                MAX
            )),
            json!(age(s, now)),
        ]
    },
    conditions: None,
};

const INGRESS: Printer = Printer {
    columns: &[
        NAME,
        col("Class", "string", "The name of the IngressClass resource that should be used for additional configuration"),
        col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
        col("Address", "string", "Address is a list containing ingress points for the load-balancer"),
        col("Ports", "string", "Ports of TLS configurations that open"),
        AGE,
    ],
    cells: |ing, now| {
        const MAX: usize = 3;
        let rules = arr_at(ing, &["spec", "rules"]);
        // Upstream stops collecting once three hosts are listed, and then counts every rule.
        let mut hosts: Vec<&str> = Vec::new();
        let mut more = false;
        for r in rules {
            if hosts.len() == MAX {
                more = true;
            }
            let host = str_at(r, &["host"]);
            if !more && !host.is_empty() {
                hosts.push(host);
            }
        }
        let hosts = if hosts.is_empty() {
            "*".to_string()
        } else if more {
            format!("{} + {} more...", hosts.join(","), rules.len() - MAX)
        } else {
            hosts.join(",")
        };
        let ports = if arr_at(ing, &["spec", "tls"]).is_empty() {
            "80"
        } else {
            "80, 443"
        };
        vec![
            name(ing),
            json!(opt_str(ing, &["spec", "ingressClassName"]).unwrap_or("<none>")),
            json!(hosts),
            json!(super::core_lb(arr_at(ing, &["status", "loadBalancer", "ingress"]))),
            json!(ports),
            json!(age(ing, now)),
        ]
    },
    conditions: None,
};

const INGRESS_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Controller",
            "string",
            "Controller that is responsible for handling this class",
        ),
        col(
            "Parameters",
            "string",
            "A reference to a resource with additional parameters",
        ),
        AGE,
    ],
    cells: |ic, now| {
        let parameters = match get(ic, &["spec", "parameters"]).filter(|p| p.is_object()) {
            Some(p) => {
                let mut s = str_at(p, &["kind"]).to_string();
                if let Some(g) = opt_str(p, &["apiGroup"]) {
                    s = format!("{s}.{g}");
                }
                format!("{s}/{}", str_at(p, &["name"]))
            }
            None => "<none>".to_string(),
        };
        vec![
            name(ic),
            json!(str_at(ic, &["spec", "controller"])),
            json!(parameters),
            json!(age(ic, now)),
        ]
    },
    conditions: None,
};

const NETWORK_POLICY: Printer = Printer {
    columns: &[
        NAME,
        col("Pod-Selector", "string", "Selects the pods to which this NetworkPolicy object applies.  The array of ingress rules is applied to any pods selected by this field. Multiple network policies can select the same set of pods.  In this case, the ingress rules for each are combined additively. This field is NOT optional and follows standard label selector semantics. An empty podSelector matches all pods in this namespace."),
        AGE,
    ],
    cells: |np, now| {
        // podSelector is a struct upstream, so an absent one prints as the empty selector.
        let sel = get(np, &["spec", "podSelector"]).cloned().unwrap_or(json!({}));
        vec![
            name(np),
            json!(format_label_selector(Some(&sel))),
            json!(age(np, now)),
        ]
    },
    conditions: None,
};

const PDB: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Min Available",
            "string",
            "The minimum number of pods that must be available.",
        ),
        col(
            "Max Unavailable",
            "string",
            "The maximum number of pods that may be unavailable.",
        ),
        col(
            "Allowed Disruptions",
            "integer",
            "Calculated number of pods that may be disrupted at this time.",
        ),
        AGE,
    ],
    cells: |pdb, now| {
        let field = |f: &str| {
            get(pdb, &["spec", f])
                .filter(|v| !v.is_null())
                .map_or_else(|| "N/A".to_string(), int_or_string)
        };
        vec![
            name(pdb),
            json!(field("minAvailable")),
            json!(field("maxUnavailable")),
            json!(int_at(pdb, &["status", "disruptionsAllowed"])),
            json!(age(pdb, now)),
        ]
    },
    conditions: None,
};

const PRIORITY_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col("Value", "integer", "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec."),
        col("Global-Default", "boolean", "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority."),
        AGE,
        col("PreemptionPolicy", "string", "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset."),
    ],
    cells: |pc, now| {
        vec![
            name(pc),
            json!(int_at(pc, &["value"])),
            json!(bool_at(pc, &["globalDefault"])),
            json!(age(pc, now)),
            json!(str_at(pc, &["preemptionPolicy"])),
        ]
    },
    conditions: None,
};

const STORAGE_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col("Provisioner", "string", "provisioner indicates the type of the provisioner."),
        col("ReclaimPolicy", "string", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete."),
        col("VolumeBindingMode", "string", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature."),
        col("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand."),
        AGE,
    ],
    cells: |sc, now| {
        let annotation = |k: &str| get(sc, &["metadata", "annotations", k]).and_then(Value::as_str);
        let default = annotation("storageclass.kubernetes.io/is-default-class") == Some("true")
            || annotation("storageclass.beta.kubernetes.io/is-default-class") == Some("true");
        let mut n = str_at(sc, &["metadata", "name"]).to_string();
        if default {
            n.push_str(" (default)");
        }
        vec![
            json!(n),
            json!(str_at(sc, &["provisioner"])),
            json!(opt_str(sc, &["reclaimPolicy"]).unwrap_or("Delete")),
            json!(opt_str(sc, &["volumeBindingMode"]).unwrap_or("Immediate")),
            json!(bool_at(sc, &["allowVolumeExpansion"])),
            json!(age(sc, now)),
        ]
    },
    conditions: None,
};
