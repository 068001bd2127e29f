//! The ServiceAccount controller: a `default` ServiceAccount in every active namespace
//! (recreated when deleted), and upstream's root-CA publisher: the `kube-root-ca.crt`
//! ConfigMap holding the cluster CA under `ca.crt`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::ObjectMeta;

use crate::runtime::{key_of, run_workers, ApiError, Cache, Change, Context, Control, WorkQueue};

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SA: &str = "default";
/// The ConfigMap the root CA is published in.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// Its data key.
pub const ROOT_CA_KEY: &str = "ca.crt";
const DESCRIPTION: &str = "kubernetes.io/description";
const DESCRIPTION_TEXT: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Whether the namespace is active (upstream skips terminating ones: creates there fail).
fn active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

/// The root-CA ConfigMap of namespace `ns`.
pub fn root_ca_configmap(ns: &str, ca_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CA_CONFIGMAP.into()),
            namespace: Some(ns.into()),
            annotations: Some(BTreeMap::from([(
                DESCRIPTION.into(),
                DESCRIPTION_TEXT.into(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(ROOT_CA_KEY.into(), ca_pem.into())])),
        ..Default::default()
    }
}

/// Syncs namespace `name`: creates its `default` ServiceAccount when missing and, with a
/// CA, creates or corrects its `kube-root-ca.crt` ConfigMap.
pub async fn sync(
    control: &dyn Control,
    name: &str,
    namespaces: &Cache<Namespace>,
    accounts: &Cache<ServiceAccount>,
    configmaps: &Cache<ConfigMap>,
    ca_pem: Option<&str>,
) -> Result<(), ApiError> {
    let Some(ns) = namespaces.get("", name) else {
        return Ok(());
    };
    if !active(&ns) {
        return Ok(());
    }
    if accounts.get(name, DEFAULT_SA).is_none() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT_SA.into()),
                namespace: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match control.create_obj(&sa).await {
            Err(e) if !e.is_already_exists() && !e.is_forbidden() => return Err(e),
            _ => {}
        }
    }
    let Some(ca) = ca_pem else { return Ok(()) };
    let want = root_ca_configmap(name, ca);
    match configmaps.get(name, ROOT_CA_CONFIGMAP) {
        None => match control.create_obj(&want).await {
            Err(e) if !e.is_already_exists() && !e.is_forbidden() => Err(e),
            _ => Ok(()),
        },
        Some(cur) => {
            let annotated = cur
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DESCRIPTION))
                .map(String::as_str)
                == Some(DESCRIPTION_TEXT);
            if cur.data == want.data && annotated && cur.binary_data.is_none() {
                return Ok(());
            }
            let mut next = (*cur).clone();
            next.data = want.data;
            next.binary_data = None;
            next.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(DESCRIPTION.into(), DESCRIPTION_TEXT.into());
            control.update_obj(&next).await.map(drop)
        }
    }
}

/// Runs the ServiceAccount controller (and the root-CA publisher when `ca_pem` is given)
/// until dropped.
pub async fn run_with_ca(ctx: Arc<Context>, ca_pem: Option<String>) -> anyhow::Result<()> {
    let namespaces = ctx.informers.cache::<Namespace>();
    let accounts = ctx.informers.cache::<ServiceAccount>();
    let configmaps = ctx.informers.cache::<ConfigMap>();
    let queue = WorkQueue::default();
    let q = queue.clone();
    namespaces.add_handler(move |c| {
        if !matches!(c, Change::Deleted(_)) {
            q.add(key_of(c.object().as_ref()));
        }
    });
    let q = queue.clone();
    accounts.add_handler(move |c| {
        if let Change::Deleted(sa) = c {
            if sa.metadata.name.as_deref() == Some(DEFAULT_SA) {
                q.add(sa.metadata.namespace.clone().unwrap_or_default());
            }
        }
    });
    if ca_pem.is_some() {
        let q = queue.clone();
        configmaps.add_handler(move |c| {
            let cm = c.object();
            if cm.metadata.name.as_deref() == Some(ROOT_CA_CONFIGMAP) {
                q.add(cm.metadata.namespace.clone().unwrap_or_default());
            }
        });
    }
    ctx.informers.wait_for_sync().await;
    for ns in namespaces.list_all() {
        queue.add(key_of(ns.as_ref()));
    }
    let control = ctx.control.clone();
    let ca: Option<Arc<str>> = ca_pem.map(Into::into);
    run_workers("serviceaccount", queue, 3, move |key| {
        let (control, namespaces, accounts, configmaps, ca) = (
            control.clone(),
            namespaces.clone(),
            accounts.clone(),
            configmaps.clone(),
            ca.clone(),
        );
        async move {
            sync(
                control.as_ref(),
                &key,
                &namespaces,
                &accounts,
                &configmaps,
                ca.as_deref(),
            )
            .await?;
            Ok(None)
        }
    })
    .await;
    Ok(())
}

/// Runs the ServiceAccount controller with no CA to publish.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    run_with_ca(ctx, None).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{RecordingControl, SharedInformers, Verb};

    #[tokio::test]
    async fn default_account_and_root_ca() {
        let inf = SharedInformers::new(None);
        let (nss, sas, cms) = (
            inf.cache::<Namespace>(),
            inf.cache::<ServiceAccount>(),
            inf.cache::<ConfigMap>(),
        );
        let mut ns = Namespace::default();
        ns.metadata.name = Some("a".into());
        nss.apply(ns.clone());
        let rc = RecordingControl::new();
        sync(&rc, "a", &nss, &sas, &cms, Some("PEM")).await.unwrap();
        assert_eq!(rc.of(Verb::Create, "ServiceAccount")[0].name, "default");
        let cms_created = rc.of(Verb::Create, "ConfigMap");
        let cm = &cms_created[0];
        assert_eq!(cm.object.as_ref().unwrap()["data"]["ca.crt"], "PEM");
        // Present and right: nothing; a stale CA is corrected.
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some("default".into());
        sa.metadata.namespace = Some("a".into());
        sas.apply(sa);
        cms.apply(root_ca_configmap("a", "OLD"));
        rc.clear();
        sync(&rc, "a", &nss, &sas, &cms, Some("PEM")).await.unwrap();
        assert_eq!(rc.actions().len(), 1);
        assert_eq!(rc.of(Verb::Update, "ConfigMap").len(), 1);
        // Terminating namespaces get nothing.
        ns.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        nss.apply(ns);
        sas.delete(ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                namespace: Some("a".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        rc.clear();
        sync(&rc, "a", &nss, &sas, &cms, Some("PEM")).await.unwrap();
        assert!(rc.actions().is_empty());
    }

    use k8s_openapi::jiff::Timestamp;
}
