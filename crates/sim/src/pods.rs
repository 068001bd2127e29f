//! The pods of simulated nodes: one watch of every bound pod, filtered locally by node name
//! (a field selector cannot name thousands of nodes), one loop that owns the pod IP
//! bookkeeping, and short-lived tasks (bounded by a semaphore) for the writes.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

use crate::ipam::{Cidr, PodIps};
use crate::objects;
use crate::Shared;

/// A pod running on a simulated node.
struct Entry {
    /// The address taken from the node's CIDR (`None` for host-network pods).
    ip: Option<Ipv4Addr>,
    /// Running status written (or being written): do not write it again.
    reported: bool,
    /// Final deletion scheduled.
    deleting: bool,
}

#[derive(Default)]
struct NodePods {
    ips: PodIps,
    pods: HashMap<Box<str>, Entry>,
}

/// What the write tasks report back to the loop.
enum Msg {
    StatusFailed { node: usize, uid: Box<str> },
    DeleteFailed { node: usize, uid: Box<str> },
    Listed(Vec<Pod>),
}

struct Loop {
    shared: Arc<Shared>,
    nodes: Vec<NodePods>,
    limit: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Msg>,
}

fn uid_of(p: &Pod) -> Option<&str> {
    p.metadata.uid.as_deref()
}

impl Loop {
    fn node_of(&self, p: &Pod) -> Option<usize> {
        let name = p.spec.as_ref()?.node_name.as_deref()?;
        self.shared.by_name.get(name).copied()
    }

    fn cidr(&self, node: usize) -> Option<Cidr> {
        self.shared.nodes[node].cidr()
    }

    /// A pod was added or changed.
    fn apply(&mut self, p: Pod) {
        let Some(i) = self.node_of(&p) else { return };
        let Some(uid) = uid_of(&p).map(Box::<str>::from) else {
            return;
        };
        let host_network = p
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let stopped = self.shared.nodes[i].is_stopped();
        let cidr = self.cidr(i);
        let np = &mut self.nodes[i];
        if objects::is_running(&p) && !np.pods.contains_key(&uid) {
            // Running already (started by us before a restart of the watch or the process):
            // keep its address taken.
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|s| s.parse().ok())
                .filter(|ip| !host_network && cidr.is_some_and(|c| np.ips.mark(&c, *ip)));
            np.pods.insert(
                uid.clone(),
                Entry {
                    ip,
                    reported: true,
                    deleting: false,
                },
            );
        }
        // A dead kubelet does nothing; the bookkeeping above is ours, not the node's.
        if stopped {
            return;
        }
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if p.metadata.deletion_timestamp.is_some() {
            let entry = np.pods.entry(uid.clone()).or_insert(Entry {
                ip: None,
                reported: false,
                deleting: false,
            });
            if !entry.deleting {
                entry.deleting = true;
                self.delete_later(i, uid, &p);
            }
            return;
        }
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return;
        }
        if np.pods.get(&uid).is_some_and(|e| e.reported) {
            return;
        }
        let host_ip = self.shared.nodes[i].host_ip();
        let ip = if host_network {
            None
        } else {
            let Some(c) = cidr else {
                tracing::warn!(node = %self.shared.nodes[i].name, "no pod CIDR yet, cannot start pod");
                return;
            };
            // Keep the address a half-started pod already has.
            match np.pods.get(&uid).and_then(|e| e.ip) {
                Some(ip) => Some(ip),
                None => match np.ips.allocate(&c) {
                    Some(ip) => Some(ip),
                    None => {
                        tracing::warn!(node = %self.shared.nodes[i].name, "pod CIDR exhausted");
                        return;
                    }
                },
            }
        };
        np.pods.insert(
            uid.clone(),
            Entry {
                ip,
                reported: true,
                deleting: false,
            },
        );
        let status = objects::running_status(&p, host_ip, ip.unwrap_or(host_ip), Utc::now());
        self.write_status(i, uid, &p, status);
    }

    /// A pod is gone: free its address.
    fn delete(&mut self, p: &Pod) {
        let Some(i) = self.node_of(p) else { return };
        let Some(uid) = uid_of(p) else { return };
        self.forget(i, uid);
    }

    fn forget(&mut self, i: usize, uid: &str) {
        let cidr = self.cidr(i);
        let np = &mut self.nodes[i];
        if let Some(e) = np.pods.remove(uid) {
            if let (Some(ip), Some(c)) = (e.ip, cidr) {
                np.ips.release(&c, ip);
            }
        }
    }

    fn write_status(&self, node: usize, uid: Box<str>, p: &Pod, status: serde_json::Value) {
        let (ns, name) = (namespace(p), p.metadata.name.clone().unwrap_or_default());
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &ns);
        let limit = self.limit.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            // The uid in the patch makes it fail on a pod recreated under the same name.
            let patch = json!({"metadata": {"uid": &*uid}, "status": status});
            let ok = retry(|| async {
                match api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if gone(&e) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await;
            if let Err(e) = ok {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "updating pod status");
                let _ = tx.send(Msg::StatusFailed { node, uid });
            }
        });
    }

    /// Deletes a gracefully deleted pod for good after `min(grace, max_delete_delay)`.
    fn delete_later(&self, node: usize, uid: Box<str>, p: &Pod) {
        let grace = p.metadata.deletion_grace_period_seconds.unwrap_or(0).max(0) as u64;
        let delay = Duration::from_secs(grace).min(self.shared.cfg.max_delete_delay);
        let (ns, name) = (namespace(p), p.metadata.name.clone().unwrap_or_default());
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &ns);
        let limit = self.limit.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _permit = limit.acquire_owned().await;
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.to_string()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let ok = retry(|| async {
                match api.delete(&name, &dp).await {
                    Ok(_) => Ok(()),
                    Err(e) if gone(&e) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await;
            if let Err(e) = ok {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "deleting pod");
                let _ = tx.send(Msg::DeleteFailed { node, uid });
            }
        });
    }

    /// Lists the pods of a node that came back and handles them as changes.
    fn resync(&self, node: usize) {
        let api: Api<Pod> = Api::all(self.shared.client.clone());
        let name = self.shared.nodes[node].name.to_string();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let lp = ListParams::default().fields(&format!("spec.nodeName={name}"));
            match retry(|| api.list(&lp)).await {
                Ok(list) => {
                    let _ = tx.send(Msg::Listed(list.items));
                }
                Err(e) => tracing::warn!(node = %name, error = %e, "listing pods"),
            }
        });
    }

    fn on_msg(&mut self, m: Msg) {
        match m {
            Msg::StatusFailed { node, uid } => {
                if let Some(e) = self.nodes[node].pods.get_mut(&uid) {
                    e.reported = false;
                }
            }
            Msg::DeleteFailed { node, uid } => {
                if let Some(e) = self.nodes[node].pods.get_mut(&uid) {
                    e.deleting = false;
                }
            }
            Msg::Listed(pods) => pods.into_iter().for_each(|p| self.apply(p)),
        }
    }
}

fn namespace(p: &Pod) -> String {
    p.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

/// The pod is gone or was replaced: nothing left to do for it.
fn gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || (s.code == 409 && s.message.contains("Precondition failed")))
}

/// Three attempts with a short backoff: the API server may be briefly overloaded.
async fn retry<T, F, Fut>(mut f: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 2 => {
                tracing::debug!(error = %e, "retrying");
                tokio::time::sleep(delay).await;
                delay *= 4;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The pod loop. Signals `ready` once the first list has been handled.
pub async fn run(
    shared: Arc<Shared>,
    mut resync: mpsc::UnboundedReceiver<usize>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut lp = Loop {
        nodes: (0..shared.nodes.len())
            .map(|_| NodePods::default())
            .collect(),
        limit: Arc::new(Semaphore::new(shared.cfg.concurrency.max(1))),
        shared,
        tx,
    };
    let api: Api<Pod> = Api::all(lp.shared.client.clone());
    let cfg = watcher::Config::default().fields("spec.nodeName!=");
    let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff());
    let mut ready = Some(ready);
    let mut listed: HashSet<Box<str>> = HashSet::new();
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { return };
                match ev {
                    Ok(watcher::Event::Init) => listed.clear(),
                    Ok(watcher::Event::InitApply(p)) => {
                        if let Some(uid) = uid_of(&p) {
                            listed.insert(uid.into());
                        }
                        lp.apply(p);
                    }
                    Ok(watcher::Event::InitDone) => {
                        // Whatever the new list lacks was deleted while the watch was down.
                        for i in 0..lp.nodes.len() {
                            let gone: Vec<Box<str>> = lp.nodes[i]
                                .pods
                                .keys()
                                .filter(|u| !listed.contains(*u))
                                .cloned()
                                .collect();
                            for uid in gone {
                                lp.forget(i, &uid);
                            }
                        }
                        listed = HashSet::new();
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(p)) => lp.apply(p),
                    Ok(watcher::Event::Delete(p)) => lp.delete(&p),
                    Err(e) => tracing::debug!(error = %e, "watching pods"),
                }
            }
            Some(m) = rx.recv() => lp.on_msg(m),
            Some(i) = resync.recv() => lp.resync(i),
        }
    }
}
