//! The Node object: registration, capacity, status, the Lease heartbeat, and the event recorder.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Context;

/// The host name (`/proc/sys/kernel/hostname`), lower-cased as node names must be.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The address the host uses for outbound traffic (no packet is sent), else loopback.
pub fn primary_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("10.255.255.255:1")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// Node resources in base units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resources {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub ephemeral_storage_bytes: i64,
    pub pods: i64,
}

impl Resources {
    /// The host's capacity: CPUs, MemTotal and the size of the filesystem holding `dir`.
    pub fn of_host(dir: &Path, max_pods: u32) -> Resources {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
        let mem_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
            })
            .unwrap_or(0);
        let storage = rustix::fs::statvfs(dir)
            .map(|s| (s.f_blocks * s.f_frsize) as i64)
            .unwrap_or(0);
        Resources {
            cpu_millis: cpus * 1000,
            memory_bytes: mem_kib * 1024,
            ephemeral_storage_bytes: storage,
            pods: max_pods as i64,
        }
    }

    /// Capacity minus upstream's default hard-eviction thresholds (memory.available 100Mi,
    /// nodefs.available 10%); nothing is reserved for system daemons by default.
    pub fn allocatable(&self) -> Resources {
        Resources {
            memory_bytes: (self.memory_bytes - (100 << 20)).max(0),
            ephemeral_storage_bytes: self.ephemeral_storage_bytes / 10 * 9,
            ..*self
        }
    }

    fn to_map(self) -> BTreeMap<String, Quantity> {
        let cpu = if self.cpu_millis % 1000 == 0 {
            format!("{}", self.cpu_millis / 1000)
        } else {
            format!("{}m", self.cpu_millis)
        };
        let mem = if self.memory_bytes % 1024 == 0 {
            format!("{}Ki", self.memory_bytes / 1024)
        } else {
            self.memory_bytes.to_string()
        };
        BTreeMap::from([
            ("cpu".into(), Quantity(cpu)),
            ("memory".into(), Quantity(mem)),
            (
                "ephemeral-storage".into(),
                Quantity(self.ephemeral_storage_bytes.to_string()),
            ),
            ("pods".into(), Quantity(self.pods.to_string())),
        ])
    }
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The version skiff reports as its kubelet version.
pub const KUBELET_VERSION: &str = "v1.32.0-skiff";

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> serde_json::Value {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    })
}

/// The Node's status as the agent sees it now.
async fn node_status(ctx: &Context) -> Result<serde_json::Value> {
    let capacity = Resources::of_host(&ctx.config.agent_dir(), ctx.config.max_pods);
    let version = ctx
        .runtime
        .cri()
        .version(k8s_cri::v1::VersionRequest::default())
        .await
        .context("cri version")?
        .into_inner();
    let images = ctx
        .runtime
        .images()
        .list_images(k8s_cri::v1::ListImagesRequest::default())
        .await
        .context("cri list images")?
        .into_inner()
        .images;
    let mut images: Vec<_> = images
        .into_iter()
        .map(|i| {
            let mut names = i.repo_digests.clone();
            names.extend(i.repo_tags.clone());
            json!({"names": names, "sizeBytes": i.size})
        })
        .collect();
    images.truncate(50);
    let runtime_ready = runtime_ready(ctx).await;
    let ready = if runtime_ready {
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        )
    } else {
        condition(
            "Ready",
            "False",
            "KubeletNotReady",
            "container runtime is not ready",
        )
    };
    Ok(json!({
        "capacity": capacity.to_map(),
        "allocatable": capacity.allocatable().to_map(),
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            ready,
        ],
        "addresses": [
            {"type": "InternalIP", "address": ctx.node_ip.to_string()},
            {"type": "Hostname", "address": hostname()},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": read_trim("/etc/machine-id"),
            "systemUUID": read_trim("/sys/class/dmi/id/product_uuid"),
            "bootID": read_trim("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read_trim("/proc/sys/kernel/osrelease"),
            "osImage": os_image(),
            "containerRuntimeVersion": format!("{}://{}", version.runtime_name, version.runtime_version),
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": crate::image::go_arch(),
        },
        "images": images,
    }))
}

/// How long [`register`] waits for the node IPAM controller to give a new Node its pod CIDR
/// before claiming `config.pod_cidr` itself.
const POD_CIDR_WAIT: Duration = Duration::from_secs(5);

fn pod_cidr_of(node: &Node) -> Option<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .filter(|c| !c.is_empty())
}

/// Creates or updates the Node and returns its pod CIDR: the one it has or the node IPAM
/// controller gives it, else `config.pod_cidr` claimed when none arrives within a few seconds.
pub async fn register(ctx: &Context) -> Result<String> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let name = &ctx.config.node_name;
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            crate::image::go_arch().to_string(),
        ),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "beta.kubernetes.io/arch".to_string(),
            crate::image::go_arch().to_string(),
        ),
    ]);
    labels.extend(ctx.config.node_labels.clone());
    let existing = nodes.get_opt(name).await?;
    let node = match existing {
        Some(n) => {
            nodes
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": labels}})),
                )
                .await?;
            n
        }
        None => {
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels,
                    "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
                "spec": {},
            }))?;
            match nodes.create(&PostParams::default(), &node).await {
                Ok(n) => n,
                Err(kube::Error::Api(e)) if e.code == 409 => nodes.get(name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    // As kubelet, leave the pod CIDR to the node IPAM controller: a claim of our own races
    // with its allocation (two Nodes could end up with one CIDR), so the configured one is only
    // claimed when no controller answers in time.
    let mut node = node;
    let deadline = tokio::time::Instant::now() + POD_CIDR_WAIT;
    while pod_cidr_of(&node).is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        node = nodes.get(name).await?;
    }
    let pod_cidr = match pod_cidr_of(&node) {
        Some(c) => c,
        None => {
            let c = ctx.config.pod_cidr.clone();
            nodes
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"podCIDR": c, "podCIDRs": [c]}})),
                )
                .await?;
            c
        }
    };
    update_status(ctx).await?;
    Ok(pod_cidr)
}

async fn update_status(ctx: &Context) -> Result<()> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let status = node_status(ctx).await?;
    nodes
        .patch_status(
            &ctx.config.node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    Ok(())
}

/// Reports the node's status: checked every 10 s (upstream's `nodeStatusUpdateFrequency`),
/// written when readiness changed or a minute passed (`nodeStatusReportFrequency`).
pub async fn status_loop(ctx: Arc<Context>) {
    let mut last_ready = None;
    let mut last_write = tokio::time::Instant::now();
    loop {
        let ready = runtime_ready(&ctx).await;
        if Some(ready) != last_ready || last_write.elapsed() >= Duration::from_secs(60) {
            match update_status(&ctx).await {
                Ok(()) => {
                    last_ready = Some(ready);
                    last_write = tokio::time::Instant::now();
                }
                Err(e) => tracing::warn!("updating node status: {e:#}"),
            }
        }
        let period = if ready { 10 } else { 1 };
        tokio::time::sleep(Duration::from_secs(period)).await;
    }
}

/// Whether CRI reports every runtime condition (RuntimeReady, NetworkReady) true.
pub async fn runtime_ready(ctx: &Context) -> bool {
    ctx.runtime
        .cri()
        .status(k8s_cri::v1::StatusRequest::default())
        .await
        .map(|s| {
            s.into_inner()
                .status
                .map(|s| s.conditions.iter().all(|c| c.status))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// Renews the node's Lease in `kube-node-lease` every 10 s (upstream's default: a quarter of
/// the 40 s lease duration).
pub async fn lease_loop(ctx: Arc<Context>) {
    loop {
        if let Err(e) = renew_lease(&ctx).await {
            tracing::warn!("renewing node lease: {e:#}");
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

async fn renew_lease(ctx: &Context) -> Result<()> {
    let name = &ctx.config.node_name;
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let patch =
        json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}});
    match leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    if namespaces.get_opt("kube-node-lease").await?.is_none() {
        let ns: Namespace = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-node-lease"}}),
        )?;
        let _ = namespaces.create(&PostParams::default(), &ns).await;
    }
    let node: Node = Api::<Node>::all(ctx.client.clone()).get(name).await?;
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                "uid": node.metadata.uid}]},
        "spec": patch["spec"],
    }))?;
    leases.create(&PostParams::default(), &lease).await?;
    Ok(())
}

/// Records core/v1 Events as the kubelet does (`source.component: kubelet`).
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    host: String,
}

impl Recorder {
    pub fn new(client: kube::Client, host: &str) -> Recorder {
        Recorder {
            client,
            host: host.to_string(),
        }
    }

    /// Posts an event about `object` in the background; failures are only logged.
    pub fn event(&self, object: ObjectReference, type_: &str, reason: &str, message: String) {
        let client = self.client.clone();
        let host = self.host.clone();
        let reason = reason.to_string();
        let type_ = type_.to_string();
        tokio::spawn(async move {
            let ns = object.namespace.clone().unwrap_or_else(|| "default".into());
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            let name = format!(
                "{}.{:x}",
                object.name.clone().unwrap_or_default(),
                uuid_like()
            );
            let ev = json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": object,
                "reason": reason, "message": message, "type": type_,
                "source": {"component": "kubelet", "host": host},
                "firstTimestamp": now, "lastTimestamp": now, "count": 1,
                "reportingComponent": "kubelet", "reportingInstance": host,
            });
            let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, &ns);
            match serde_json::from_value(ev) {
                Ok(ev) => {
                    if let Err(e) = api.create(&PostParams::default(), &ev).await {
                        tracing::debug!("recording event: {e}");
                    }
                }
                Err(e) => tracing::debug!("building event: {e}"),
            }
        });
    }
}

fn uuid_like() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ SEQ.fetch_add(1, Ordering::Relaxed).rotate_left(48)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocatable_subtracts_eviction_thresholds() {
        let c = Resources {
            cpu_millis: 2000,
            memory_bytes: 4 << 30,
            ephemeral_storage_bytes: 1000,
            pods: 110,
        };
        let a = c.allocatable();
        assert_eq!(a.cpu_millis, 2000);
        assert_eq!(a.memory_bytes, (4 << 30) - (100 << 20));
        assert_eq!(a.ephemeral_storage_bytes, 900);
        let m = a.to_map();
        assert_eq!(m["cpu"].0, "2");
        assert_eq!(m["memory"].0, format!("{}Ki", a.memory_bytes / 1024));
        assert_eq!(m["pods"].0, "110");
    }

    #[test]
    fn host_capacity_is_read() {
        let r = Resources::of_host(Path::new("/"), 110);
        assert!(r.cpu_millis >= 1000);
        assert!(r.memory_bytes > 0);
    }
}
