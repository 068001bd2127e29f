//! The Rust type behind each served kind, and the meta types the documents refer to.

use k8s_openapi::api;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::{JsonSchema, SchemaGenerator};

/// Registers a type's definition (and everything it refers to) in the generator and returns its
/// definition name.
pub(crate) type Register = fn(&mut SchemaGenerator) -> String;

fn register<T: JsonSchema>(gen: &mut SchemaGenerator) -> String {
    gen.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// One served kind and its generated type.
pub(crate) struct KindType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub register: Register,
}

macro_rules! kinds {
    ($(($group:expr, $version:expr, $kind:expr, $ty:ty)),* $(,)?) => {
        &[$(KindType { group: $group, version: $version, kind: $kind, register: register::<$ty> }),*]
    };
}

/// Every kind the registry serves, by group, version and kind.
pub(crate) static KIND_TYPES: &[KindType] = kinds![
    ("", "v1", "ConfigMap", api::core::v1::ConfigMap),
    ("", "v1", "Endpoints", api::core::v1::Endpoints),
    ("", "v1", "Event", api::core::v1::Event),
    ("", "v1", "LimitRange", api::core::v1::LimitRange),
    ("", "v1", "Namespace", api::core::v1::Namespace),
    ("", "v1", "Node", api::core::v1::Node),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        api::core::v1::PersistentVolumeClaim
    ),
    (
        "",
        "v1",
        "PersistentVolume",
        api::core::v1::PersistentVolume
    ),
    ("", "v1", "Pod", api::core::v1::Pod),
    ("", "v1", "PodTemplate", api::core::v1::PodTemplate),
    (
        "",
        "v1",
        "ReplicationController",
        api::core::v1::ReplicationController
    ),
    ("", "v1", "ResourceQuota", api::core::v1::ResourceQuota),
    ("", "v1", "Secret", api::core::v1::Secret),
    ("", "v1", "ServiceAccount", api::core::v1::ServiceAccount),
    ("", "v1", "Service", api::core::v1::Service),
    (
        "apps",
        "v1",
        "ControllerRevision",
        api::apps::v1::ControllerRevision
    ),
    ("apps", "v1", "DaemonSet", api::apps::v1::DaemonSet),
    ("apps", "v1", "Deployment", api::apps::v1::Deployment),
    ("apps", "v1", "ReplicaSet", api::apps::v1::ReplicaSet),
    ("apps", "v1", "StatefulSet", api::apps::v1::StatefulSet),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        api::autoscaling::v2::HorizontalPodAutoscaler
    ),
    (
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        api::autoscaling::v1::HorizontalPodAutoscaler
    ),
    ("batch", "v1", "CronJob", api::batch::v1::CronJob),
    ("batch", "v1", "Job", api::batch::v1::Job),
    (
        "coordination.k8s.io",
        "v1",
        "Lease",
        api::coordination::v1::Lease
    ),
    (
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        api::discovery::v1::EndpointSlice
    ),
    ("events.k8s.io", "v1", "Event", api::events::v1::Event),
    (
        "networking.k8s.io",
        "v1",
        "IngressClass",
        api::networking::v1::IngressClass
    ),
    (
        "networking.k8s.io",
        "v1",
        "Ingress",
        api::networking::v1::Ingress
    ),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        api::networking::v1::NetworkPolicy
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        api::policy::v1::PodDisruptionBudget
    ),
    (
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        api::scheduling::v1::PriorityClass
    ),
    (
        "storage.k8s.io",
        "v1",
        "StorageClass",
        api::storage::v1::StorageClass
    ),
    // Kinds served only through subresources.
    ("", "v1", "Binding", api::core::v1::Binding),
    ("autoscaling", "v1", "Scale", api::autoscaling::v1::Scale),
];

/// Meta types every group/version's paths refer to.
pub(crate) static META_TYPES: &[Register] = &[
    register::<meta::DeleteOptions>,
    register::<meta::Status>,
    register::<meta::WatchEvent<api::core::v1::Pod>>,
    register::<meta::APIResourceList>,
    register::<meta::ListMeta>,
    register::<meta::Patch>,
];

/// Definition names of the meta types.
pub(crate) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(crate) const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub(crate) const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
pub(crate) const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
pub(crate) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(crate) const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
pub(crate) const BINDING: &str = "io.k8s.api.core.v1.Binding";
