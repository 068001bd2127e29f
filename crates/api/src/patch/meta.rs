//! Upstream's merge metadata for the served types, from the `patchStrategy`/`patchMergeKey`
//! struct tags and `+listType`/`+listMapKey` markers of k8s.io/api v0.32 and
//! k8s.io/apimachinery (ObjectMeta). Lists absent here are atomic and have no patch strategy.

use crate::schema::{ListMeta, ListType, PatchMetaEntry, PatchStrategy};

const fn entry(
    type_name: &'static str,
    field: &'static str,
    strategy: PatchStrategy,
    merge_key: Option<&'static str>,
    list_type: ListType,
) -> PatchMetaEntry {
    PatchMetaEntry {
        type_name,
        field,
        meta: ListMeta {
            strategy,
            merge_key,
            list_type,
        },
    }
}

/// Upstream's merge metadata for list fields of the served types.
pub static PATCH_META: &[PatchMetaEntry] = &[
    entry(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        PatchStrategy::Merge,
        Some("uid"),
        ListType::Map(&["uid"]),
    ),
    entry(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        PatchStrategy::Merge,
        None,
        ListType::Set,
    ),
    entry(
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Map(&["type"]),
    ),
    entry(
        "io.k8s.api.core.v1.ResourceRequirements",
        "claims",
        PatchStrategy::Replace,
        None,
        ListType::Map(&["name"]),
    ),
    entry(
        "io.k8s.api.core.v1.Container",
        "ports",
        PatchStrategy::Merge,
        Some("containerPort"),
        ListType::Map(&["containerPort", "protocol"]),
    ),
    entry(
        "io.k8s.api.core.v1.Container",
        "env",
        PatchStrategy::Merge,
        Some("name"),
        ListType::Map(&["name"]),
    ),
    entry(
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        PatchStrategy::Merge,
        Some("mountPath"),
        ListType::Map(&["mountPath"]),
    ),
    entry(
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        PatchStrategy::Merge,
        Some("devicePath"),
        ListType::Map(&["devicePath"]),
    ),
    entry(
        "io.k8s.api.core.v1.ContainerStatus",
        "volumeMounts",
        PatchStrategy::Merge,
        Some("mountPath"),
        ListType::Map(&["mountPath"]),
    ),
    entry(
        "io.k8s.api.core.v1.ContainerStatus",
        "allocatedResourcesStatus",
        PatchStrategy::Merge,
        Some("name"),
        ListType::Map(&["name"]),
    ),
    entry(
        "io.k8s.api.core.v1.ResourceStatus",
        "resources",
        PatchStrategy::Replace,
        None,
        ListType::Map(&["resourceID"]),
    ),
    entry(
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        PatchStrategy::MergeRetainKeys,
        Some("name"),
        ListType::Map(&["name"]),
    ),
    entry(
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        PatchStrategy::Merge,
        Some("name"),
        ListType::Map(&["name"]),
    ),
    entry(
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        PatchStrategy::Merge,
        Some("name"),
        ListType::Map(&["name"]),
    ),
    entry(
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        PatchStrategy::Merge,
        Some("name"),
        ListType::Map(&["name"]),
    ),
    entry(
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        PatchStrategy::Merge,
        Some("name"),
        ListType::Map(&["name"]),
    ),
    entry(
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        PatchStrategy::Merge,
        Some("ip"),
        ListType::Map(&["ip"]),
    ),
    entry(
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        PatchStrategy::Merge,
        Some("topologyKey"),
        ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
    ),
    entry(
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        PatchStrategy::Merge,
        Some("name"),
        ListType::Map(&["name"]),
    ),
    entry(
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        PatchStrategy::MergeRetainKeys,
        Some("name"),
        ListType::Map(&["name"]),
    ),
    entry(
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        PatchStrategy::Merge,
        Some("containerPort"),
        ListType::Map(&["containerPort", "protocol"]),
    ),
    entry(
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        PatchStrategy::Merge,
        Some("name"),
        ListType::Map(&["name"]),
    ),
    entry(
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        PatchStrategy::Merge,
        Some("mountPath"),
        ListType::Map(&["mountPath"]),
    ),
    entry(
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        PatchStrategy::Merge,
        Some("devicePath"),
        ListType::Map(&["devicePath"]),
    ),
    entry(
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Map(&["type"]),
    ),
    entry(
        "io.k8s.api.core.v1.PodStatus",
        "hostIPs",
        PatchStrategy::Merge,
        Some("ip"),
        ListType::Atomic,
    ),
    entry(
        "io.k8s.api.core.v1.PodStatus",
        "podIPs",
        PatchStrategy::Merge,
        Some("ip"),
        ListType::Map(&["ip"]),
    ),
    entry(
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        PatchStrategy::MergeRetainKeys,
        Some("name"),
        ListType::Map(&["name"]),
    ),
    entry(
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        "conditions",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Map(&["type"]),
    ),
    entry(
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Map(&["type"]),
    ),
    entry(
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        PatchStrategy::Merge,
        Some("port"),
        ListType::Map(&["port", "protocol"]),
    ),
    entry(
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        PatchStrategy::Merge,
        Some("name"),
        ListType::Map(&["name"]),
    ),
    entry(
        "io.k8s.api.core.v1.NodeSpec",
        "podCIDRs",
        PatchStrategy::Merge,
        None,
        ListType::Set,
    ),
    entry(
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Map(&["type"]),
    ),
    entry(
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Map(&["type"]),
    ),
    entry(
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Map(&["type"]),
    ),
    entry(
        "io.k8s.api.core.v1.ComponentStatus",
        "conditions",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Map(&["type"]),
    ),
    entry(
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Map(&["type"]),
    ),
    entry(
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Map(&["type"]),
    ),
    entry(
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Map(&["type"]),
    ),
    entry(
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Map(&["type"]),
    ),
    entry(
        "io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesRequirement",
        "values",
        PatchStrategy::Replace,
        None,
        ListType::Set,
    ),
    entry(
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Atomic,
    ),
    entry(
        "io.k8s.api.batch.v1.UncountedTerminatedPods",
        "succeeded",
        PatchStrategy::Replace,
        None,
        ListType::Set,
    ),
    entry(
        "io.k8s.api.batch.v1.UncountedTerminatedPods",
        "failed",
        PatchStrategy::Replace,
        None,
        ListType::Set,
    ),
    entry(
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Map(&["type"]),
    ),
    entry(
        "io.k8s.api.discovery.v1.Endpoint",
        "addresses",
        PatchStrategy::Replace,
        None,
        ListType::Set,
    ),
    entry(
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        PatchStrategy::Merge,
        Some("type"),
        ListType::Map(&["type"]),
    ),
    entry(
        "io.k8s.api.storage.v1.CSIDriverSpec",
        "volumeLifecycleModes",
        PatchStrategy::Replace,
        None,
        ListType::Set,
    ),
    entry(
        "io.k8s.api.storage.v1.CSINodeSpec",
        "drivers",
        PatchStrategy::Merge,
        Some("name"),
        ListType::Map(&["name"]),
    ),
];

/// Object (non-list) fields whose struct tag says `patchStrategy:"replace"`: a strategic merge
/// patch replaces them whole instead of merging them. [`crate::schema::FieldInfo`] cannot carry
/// this, so strategic merge consults this table directly. (`retainKeys` on object fields, as on
/// `DeploymentSpec.strategy`, only matters when computing a patch, not when applying one.)
pub static REPLACE_OBJECT_FIELDS: &[(&str, &str)] =
    &[("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "selector")];

/// The metadata of a list field, if upstream gives it any.
pub fn list_meta(type_name: &str, field: &str) -> Option<ListMeta> {
    PATCH_META
        .iter()
        .find(|e| e.type_name == type_name && e.field == field)
        .map(|e| e.meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_entries() {
        let c = list_meta("io.k8s.api.core.v1.PodSpec", "containers").unwrap();
        assert_eq!(c.strategy, PatchStrategy::Merge);
        assert_eq!(c.merge_key, Some("name"));
        let v = list_meta("io.k8s.api.core.v1.PodSpec", "volumes").unwrap();
        assert_eq!(v.strategy, PatchStrategy::MergeRetainKeys);
        let p = list_meta("io.k8s.api.core.v1.Container", "ports").unwrap();
        assert_eq!(p.list_type, ListType::Map(&["containerPort", "protocol"]));
        let f = list_meta(
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "finalizers",
        )
        .unwrap();
        assert_eq!(
            (f.strategy, f.merge_key, f.list_type),
            (PatchStrategy::Merge, None, ListType::Set)
        );
        let j = list_meta("io.k8s.api.batch.v1.JobStatus", "conditions").unwrap();
        assert_eq!(j.list_type, ListType::Atomic);
        assert!(list_meta("io.k8s.api.core.v1.PodSpec", "tolerations").is_none());
        assert!(list_meta("io.k8s.api.core.v1.Container", "args").is_none());
    }

    #[test]
    fn entries_are_consistent() {
        for (i, e) in PATCH_META.iter().enumerate() {
            assert!(
                !PATCH_META[i + 1..]
                    .iter()
                    .any(|o| o.type_name == e.type_name && o.field == e.field),
                "{}.{} duplicated",
                e.type_name,
                e.field
            );
            let merges = matches!(
                e.meta.strategy,
                PatchStrategy::Merge | PatchStrategy::MergeRetainKeys
            );
            // A merged list of objects needs a key; a merged list of scalars must not have one.
            if merges && e.meta.list_type != ListType::Set {
                assert!(e.meta.merge_key.is_some(), "{}.{}", e.type_name, e.field);
            }
            if let (Some(k), ListType::Map(keys)) = (e.meta.merge_key, e.meta.list_type) {
                assert_eq!(keys[0], k, "{}.{}", e.type_name, e.field);
            }
        }
    }
}
