//! The namespace controller: empties a namespace being deleted (every namespaced resource
//! served), reports progress in the Terminating conditions upstream sets, then removes the
//! `kubernetes` finalizer through `namespaces/{name}/finalize` so the API server deletes it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::core::ApiResource;
use skiff_api::registry::{ResourceInfo, RESOURCES};

use crate::gc::live::{KubeLive, Live};
use crate::runtime::{key_of, run_workers, ApiError, Cache, Change, Context, Control, WorkQueue};

/// The finalizer this controller owns.
pub const FINALIZER: &str = "kubernetes";

/// The condition types the controller maintains, in upstream's order, with their
/// reason and message when all is well.
const CONDITIONS: &[(&str, &str, &str)] = &[
    (
        "NamespaceDeletionDiscoveryFailure",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        "NamespaceDeletionGroupVersionParsingFailure",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        "NamespaceContentRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        "NamespaceFinalizersRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
];

/// The namespaced resources whose content namespace deletion removes: every stored
/// (storage-version) namespaced resource the API serves.
pub fn namespaced_resources() -> Vec<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .filter(|r| r.namespaced && r.storage_version)
        .collect()
}

/// The kube `ApiResource` of a registry entry.
pub fn api_resource(r: &ResourceInfo) -> ApiResource {
    ApiResource {
        group: r.group.to_string(),
        version: r.version.to_string(),
        api_version: r.api_version(),
        kind: r.kind.to_string(),
        plural: r.plural.to_string(),
    }
}

/// What deleting a namespace's content left behind.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Remaining {
    /// `plural.group` -> objects still present.
    pub resources: BTreeMap<String, usize>,
    /// finalizer -> objects still carrying it.
    pub finalizers: BTreeMap<String, usize>,
    /// Failed deletions, as messages.
    pub errors: Vec<String>,
}

impl Remaining {
    /// Whether anything is left (or failed).
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.errors.is_empty()
    }
}

/// The conditions a Terminating namespace should carry given what remains (upstream's
/// `namespaceConditionUpdater`): failures as `True` with their reason and message, the rest
/// as `False` with the success text; transition times kept unless the status flips.
pub fn conditions(
    current: &[NamespaceCondition],
    remaining: &Remaining,
    now: Timestamp,
) -> Vec<NamespaceCondition> {
    let mut failing: BTreeMap<&str, (String, String)> = BTreeMap::new();
    if !remaining.errors.is_empty() {
        let mut msgs = remaining.errors.clone();
        msgs.sort();
        failing.insert(
            "NamespaceDeletionContentFailure",
            (
                "ContentDeletionFailed".into(),
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    msgs.len(),
                    msgs.join(", ")
                ),
            ),
        );
    }
    if !remaining.resources.is_empty() {
        let mut parts: Vec<String> = remaining
            .resources
            .iter()
            .map(|(gr, n)| {
                let (res, group) = gr.split_once('.').unwrap_or((gr, ""));
                format!("{res}.{group} has {n} resource instances")
            })
            .collect();
        parts.sort();
        failing.insert(
            "NamespaceContentRemaining",
            (
                "SomeResourcesRemain".into(),
                format!("Some resources are remaining: {}", parts.join(", ")),
            ),
        );
    }
    if !remaining.finalizers.is_empty() {
        let mut parts: Vec<String> = remaining
            .finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        parts.sort();
        failing.insert(
            "NamespaceFinalizersRemaining",
            (
                "SomeFinalizerRemain".into(),
                format!("Some finalizers are remaining: {}", parts.join(", ")),
            ),
        );
    }
    let mut out: Vec<NamespaceCondition> = current.to_vec();
    for (t, ok_reason, ok_msg) in CONDITIONS {
        let (status, reason, message) = match failing.get(t) {
            Some((r, m)) => ("True", r.clone(), m.clone()),
            None => ("False", ok_reason.to_string(), ok_msg.to_string()),
        };
        match out.iter_mut().find(|c| c.type_ == *t) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(Time(now));
                }
                c.status = status.into();
                c.reason = Some(reason);
                c.message = Some(message);
            }
            None => out.push(NamespaceCondition {
                type_: t.to_string(),
                status: status.into(),
                reason: Some(reason),
                message: Some(message),
                last_transition_time: Some(Time(now)),
            }),
        }
    }
    out
}

/// Deletes every namespaced resource's collection in `ns`, then lists what is left.
pub async fn delete_all_content(live: &dyn Live, ns: &str) -> Remaining {
    let mut out = Remaining::default();
    for r in namespaced_resources() {
        let ar = api_resource(r);
        if let Err(e) = live.delete_collection(&ar, ns).await {
            if !e.is_not_found() {
                out.errors.push(format!("{}: {e}", r.group_resource()));
                continue;
            }
        }
        match live.list(&ar, ns).await {
            Ok(items) if !items.is_empty() => {
                let gr = if r.group.is_empty() {
                    format!("{}.", r.plural)
                } else {
                    r.group_resource()
                };
                out.resources.insert(gr, items.len());
                for item in &items {
                    for f in item["metadata"]["finalizers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        if let Some(f) = f.as_str() {
                            *out.finalizers.entry(f.to_string()).or_default() += 1;
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => out.errors.push(format!("{}: {e}", r.group_resource())),
        }
    }
    out
}

/// The namespace's `spec.finalizers`.
fn finalizers(ns: &Namespace) -> Vec<String> {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default()
}

/// Syncs one namespace. Returns `Some(delay)` when content remains and the namespace must
/// be looked at again.
pub async fn sync(
    control: &dyn Control,
    live: &dyn Live,
    namespaces: &Cache<Namespace>,
    name: &str,
) -> Result<Option<Duration>, ApiError> {
    let Some(ns) = namespaces.get("", name) else {
        return Ok(None);
    };
    if ns.metadata.deletion_timestamp.is_none() || !finalizers(&ns).iter().any(|f| f == FINALIZER) {
        return Ok(None);
    }
    let remaining = delete_all_content(live, name).await;
    let now = Timestamp::now();
    let status = ns.status.clone().unwrap_or_default();
    let current = status.conditions.clone().unwrap_or_default();
    let want = conditions(&current, &remaining, now);
    if want != current || status.phase.as_deref() != Some("Terminating") {
        let mut next = (*ns).clone();
        let st = next.status.get_or_insert_with(Default::default);
        st.phase = Some("Terminating".into());
        st.conditions = Some(want);
        match control.update_status_obj(&next).await {
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) if !e.is_conflict() => return Err(e),
            // A conflict means a newer version is on its way to the cache.
            _ => {}
        }
    }
    if !remaining.is_empty() {
        // Graceful deletions finish on their own clock, and nothing in this namespace's
        // cache changes when they do: look again shortly.
        return Ok(Some(Duration::from_secs(1)));
    }
    let rest: Vec<String> = finalizers(&ns)
        .into_iter()
        .filter(|f| f != FINALIZER)
        .collect();
    match live.finalize_namespace(&ns, rest).await {
        Err(e) if e.is_not_found() => Ok(None),
        r => r.map(|_| None),
    }
}

/// Runs the namespace controller until dropped.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let namespaces = ctx.informers.cache::<Namespace>();
    let queue = WorkQueue::default();
    let q = queue.clone();
    namespaces.add_handler(move |c| {
        if !matches!(c, Change::Deleted(_)) && c.object().metadata.deletion_timestamp.is_some() {
            q.add(key_of(c.object().as_ref()));
        }
    });
    ctx.informers.wait_for_sync().await;
    for ns in namespaces.list_all() {
        if ns.metadata.deletion_timestamp.is_some() {
            queue.add(key_of(ns.as_ref()));
        }
    }
    let control = ctx.control.clone();
    let live: Arc<dyn Live> = Arc::new(KubeLive::new(ctx.client.clone()));
    // Upstream's --concurrent-namespace-syncs defaults to 10.
    run_workers("namespace", queue, 10, move |key| {
        let (control, live, namespaces) = (control.clone(), live.clone(), namespaces.clone());
        async move { Ok(sync(control.as_ref(), live.as_ref(), &namespaces, &key).await?) }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gc::live::FakeLive;
    use crate::runtime::{RecordingControl, SharedInformers, Verb};
    use serde_json::json;

    fn terminating() -> Namespace {
        serde_json::from_value(json!({
            "metadata": {"name": "team", "deletionTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Terminating"}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn empties_then_finalizes() {
        let inf = SharedInformers::new(None);
        let nss = inf.cache::<Namespace>();
        nss.apply(terminating());
        let live = FakeLive::new();
        live.insert(
            "configmaps",
            json!({"metadata": {"namespace": "team", "name": "a"}}),
        );
        live.insert(
            "pods",
            json!({"metadata": {"namespace": "team", "name": "p", "finalizers": ["x/y"]}}),
        );
        let rc = RecordingControl::new();
        let again = sync(&rc, &live, &nss, "team").await.unwrap();
        assert!(again.is_some());
        assert!(live.finalized().is_empty());
        let st = rc.of(Verb::UpdateStatus, "Namespace");
        let ns: Namespace = serde_json::from_value(st[0].object.clone().unwrap()).unwrap();
        let conds = ns.status.unwrap().conditions.unwrap();
        let c = conds
            .iter()
            .find(|c| c.type_ == "NamespaceContentRemaining")
            .unwrap();
        assert_eq!(c.status, "True");
        assert_eq!(
            c.message.as_deref(),
            Some("Some resources are remaining: pods. has 1 resource instances")
        );
        let f = conds
            .iter()
            .find(|c| c.type_ == "NamespaceFinalizersRemaining")
            .unwrap();
        assert_eq!(
            f.message.as_deref(),
            Some("Some finalizers are remaining: x/y in 1 resource instances")
        );
        assert!(!live.calls_of("deletecollection").is_empty());
        // The finalizer is gone: the namespace is emptied and finalized.
        live.remove("pods", "team", "p");
        assert_eq!(sync(&rc, &live, &nss, "team").await.unwrap(), None);
        assert_eq!(
            live.finalized(),
            vec![("team".to_string(), Vec::<String>::new())]
        );
    }

    #[tokio::test]
    async fn active_namespaces_are_untouched() {
        let inf = SharedInformers::new(None);
        let nss = inf.cache::<Namespace>();
        let mut ns = terminating();
        ns.metadata.deletion_timestamp = None;
        nss.apply(ns);
        let (live, rc) = (FakeLive::new(), RecordingControl::new());
        sync(&rc, &live, &nss, "team").await.unwrap();
        assert!(live.calls().is_empty() && rc.actions().is_empty());
    }
}
