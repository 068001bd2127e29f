//! Cluster DNS: answers `cluster.local` names from a watch cache of Services, EndpointSlices
//! and Namespaces, and forwards every other name to the host's resolvers.

mod resolve;
mod server;

pub use resolve::{resolve, Answer, ClusterState, EndpointEntry, PortEntry, ServiceEntry, TTL};
pub use server::{forward, read_resolv_conf, run, DnsConfig};

use serde_json::json;

/// The cluster DNS service address (k3s's default `--cluster-dns`).
pub const CLUSTER_DNS_IP: &str = "10.43.0.10";

/// The `kube-dns` Service in `kube-system`, as k3s's CoreDNS manifest defines it but without a
/// selector: the DNS server runs inside `skiff server`, not in pods, so the server maintains the
/// Service's EndpointSlice and Endpoints itself and the endpoint controllers leave them alone.
/// The `kubernetes.io/cluster-service` label makes `kubectl cluster-info` list it.
pub fn kube_dns_service() -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {
                "k8s-app": "kube-dns",
                "kubernetes.io/cluster-service": "true",
                "kubernetes.io/name": "CoreDNS"
            },
            "annotations": {
                "prometheus.io/port": "9153",
                "prometheus.io/scrape": "true"
            }
        },
        "spec": {
            "clusterIP": CLUSTER_DNS_IP,
            "clusterIPs": [CLUSTER_DNS_IP],
            "ipFamilyPolicy": "SingleStack",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}
            ]
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn kube_dns_service_has_no_selector() {
        let svc = super::kube_dns_service();
        assert!(svc["spec"].get("selector").is_none());
        assert_eq!(svc["spec"]["clusterIP"], super::CLUSTER_DNS_IP);
    }
}
