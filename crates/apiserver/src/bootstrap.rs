//! The objects every cluster starts with: the system namespaces, the `kubernetes` Service and
//! its endpoints, and the system priority classes. Idempotent: run at every start.

use std::net::IpAddr;

use serde_json::{json, Value};
use skiff_api::registry;

use crate::ApiServer;

/// The `kubernetes` Service's ClusterIP.
pub const KUBERNETES_SERVICE_IP: &str = "10.43.0.1";

async fn ensure(server: &ApiServer, group: &str, plural: &str, obj: Value) -> anyhow::Result<()> {
    let r = registry::find(group, "v1", plural).expect("bootstrap resources are served");
    match server.create_object(r, obj, "skiff-apiserver", false).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(anyhow::anyhow!("bootstrap {plural}: {e}")),
    }
}

/// Creates what is missing and points the `kubernetes` endpoints at this server.
pub async fn run(server: &ApiServer, address: IpAddr, port: u16) -> anyhow::Result<()> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(
            server,
            "",
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    ensure(server, "", "services", json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": KUBERNETES_SERVICE_IP, "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    })).await?;
    for (name, value, desc) in [
        ("system-node-critical", 2000001000, "Used for system critical pods that must not be moved from their current node."),
        ("system-cluster-critical", 2000000000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
    ] {
        ensure(server, "scheduling.k8s.io", "priorityclasses", json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": desc, "preemptionPolicy": "PreemptLowerPriority",
        })).await?;
    }
    let ep = registry::find("", "v1", "endpoints").expect("served");
    let want = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    let key = ep.key(Some("default"), "kubernetes");
    match server.read(&key).await? {
        None => ensure(server, "", "endpoints", want).await?,
        Some((cur, kv)) => {
            if cur["subsets"] != want["subsets"] {
                let mut next = cur.clone();
                next["subsets"] = want["subsets"].clone();
                server
                    .store
                    .update(
                        &key,
                        bytes::Bytes::from(crate::meta::for_storage(&next)),
                        kv.mod_revision,
                    )
                    .await?;
            }
        }
    }
    let eps = registry::find("discovery.k8s.io", "v1", "endpointslices").expect("served");
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": if address.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    let key = eps.key(Some("default"), "kubernetes");
    match server.read(&key).await? {
        None => ensure(server, "discovery.k8s.io", "endpointslices", slice).await?,
        Some((cur, kv)) => {
            if cur["endpoints"] != slice["endpoints"] || cur["ports"] != slice["ports"] {
                let mut next = cur.clone();
                next["endpoints"] = slice["endpoints"].clone();
                next["ports"] = slice["ports"].clone();
                next["addressType"] = slice["addressType"].clone();
                server
                    .store
                    .update(
                        &key,
                        bytes::Bytes::from(crate::meta::for_storage(&next)),
                        kv.mod_revision,
                    )
                    .await?;
            }
        }
    }
    Ok(())
}
