//! Every write a controller makes goes through [`Control`]: [`KubeControl`] talks to the
//! API server, [`RecordingControl`] records the calls for tests (upstream's FakePodControl).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::core::ApiResource;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A failed API call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The server answered with a failure status.
    #[error("{message}")]
    Status {
        /// HTTP code (404, 409, …).
        code: u16,
        /// Machine-readable reason (`NotFound`, `AlreadyExists`, `Conflict`, …).
        reason: String,
        /// Human-readable message.
        message: String,
    },
    /// The request did not get an answer, or the answer did not decode.
    #[error("{0}")]
    Other(String),
}

impl ApiError {
    /// The object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status { code: 404, .. })
    }
    /// A write lost a race (resourceVersion or UID precondition).
    pub fn is_conflict(&self) -> bool {
        matches!(self, ApiError::Status { code: 409, reason, .. } if reason != "AlreadyExists")
    }
    /// The name is taken.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ApiError::Status { reason, .. } if reason == "AlreadyExists")
    }
    /// The server refused because of a quota or admission rule (upstream's IsForbidden).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, ApiError::Status { code: 403, .. })
    }
}

impl From<kube::Error> for ApiError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => ApiError::Status {
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            e => ApiError::Other(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        ApiError::Other(e.to_string())
    }
}

/// The writes controllers make, on untyped objects; the typed helpers are on `dyn Control`.
#[async_trait]
pub trait Control: Send + Sync {
    /// Creates `obj` (namespace `""` for cluster-scoped resources).
    async fn create(
        &self,
        res: &ApiResource,
        namespace: &str,
        obj: Value,
    ) -> Result<Value, ApiError>;
    /// Replaces `obj` (optimistic concurrency on its resourceVersion).
    async fn update(
        &self,
        res: &ApiResource,
        namespace: &str,
        obj: Value,
    ) -> Result<Value, ApiError>;
    /// Replaces the status subresource of `obj`.
    async fn update_status(
        &self,
        res: &ApiResource,
        namespace: &str,
        obj: Value,
    ) -> Result<Value, ApiError>;
    /// Applies a JSON merge patch to `name`.
    async fn patch(
        &self,
        res: &ApiResource,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, ApiError>;
    /// Deletes `name`, only if its UID is `uid` when given; `propagation` is a
    /// propagationPolicy (`Background`, `Foreground`, `Orphan`).
    async fn delete(
        &self,
        res: &ApiResource,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        propagation: Option<&str>,
    ) -> Result<(), ApiError>;
    /// Records an event about `involved` (best effort: never fails the caller).
    async fn event(&self, involved: ObjectReference, type_: &str, reason: &str, message: String);
}

fn erase<K: Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

impl dyn Control + '_ {
    /// Creates a typed object in its own namespace.
    pub async fn create_obj<K>(&self, obj: &K) -> Result<K, ApiError>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let v = self
            .create(&erase::<K>(), &ns, serde_json::to_value(obj)?)
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Replaces a typed object.
    pub async fn update_obj<K>(&self, obj: &K) -> Result<K, ApiError>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let v = self
            .update(&erase::<K>(), &ns, serde_json::to_value(obj)?)
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Replaces the status of a typed object.
    pub async fn update_status_obj<K>(&self, obj: &K) -> Result<K, ApiError>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let v = self
            .update_status(&erase::<K>(), &ns, serde_json::to_value(obj)?)
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Merge-patches a typed object.
    pub async fn patch_obj<K>(
        &self,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Result<K, ApiError>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let v = self.patch(&erase::<K>(), namespace, name, patch).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Deletes a typed object, only if its UID still is `uid` when given.
    pub async fn delete_obj<K>(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<(), ApiError>
    where
        K: Resource<DynamicType = ()>,
    {
        self.delete(&erase::<K>(), namespace, name, uid, None).await
    }

    /// Records an event about `obj`.
    pub async fn event_for<K>(&self, obj: &K, type_: &str, reason: &str, message: String)
    where
        K: Resource<DynamicType = ()>,
    {
        self.event(object_reference(obj), type_, reason, message)
            .await
    }
}

/// A reference to `obj` for events.
pub fn object_reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let m = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

/// The controllerRef that marks `owner` as the managing controller of its objects.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.name_any(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The ownerReference with `controller: true`, if any.
pub fn get_controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Upstream's getPodsPrefix: `<controller>-`, unless that is not a valid name prefix.
fn pods_prefix(controller_name: &str) -> String {
    if controller_name.len() < 253 {
        format!("{controller_name}-")
    } else {
        controller_name.to_string()
    }
}

/// Creates a pod from `template` owned by `owner` (upstream's CreatePodsWithControllerRef),
/// recording `SuccessfulCreate` or `FailedCreate` on the owner.
pub async fn create_pod_from_template<K>(
    control: &dyn Control,
    owner: &K,
    template: &PodTemplateSpec,
    controller_ref: OwnerReference,
) -> Result<Pod, ApiError>
where
    K: Resource<DynamicType = ()>,
{
    let tm = template.metadata.clone().unwrap_or_default();
    let pod = Pod {
        metadata: ObjectMeta {
            namespace: owner.meta().namespace.clone(),
            generate_name: Some(pods_prefix(&owner.name_any())),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![controller_ref]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    };
    match control.create_obj(&pod).await {
        Ok(p) => {
            let msg = format!("Created pod: {}", p.name_any());
            control
                .event_for(owner, "Normal", "SuccessfulCreate", msg)
                .await;
            Ok(p)
        }
        Err(e) => {
            let msg = format!("Error creating: {e}");
            control
                .event_for(owner, "Warning", "FailedCreate", msg)
                .await;
            Err(e)
        }
    }
}

/// Deletes `pod` on behalf of `owner` (upstream's DeletePod), recording the event.
pub async fn delete_pod<K>(control: &dyn Control, owner: &K, pod: &Pod) -> Result<(), ApiError>
where
    K: Resource<DynamicType = ()>,
{
    let ns = pod.namespace().unwrap_or_default();
    match control
        .delete_obj::<Pod>(&ns, &pod.name_any(), pod.metadata.uid.as_deref())
        .await
    {
        Ok(()) => {
            let msg = format!("Deleted pod: {}", pod.name_any());
            control
                .event_for(owner, "Normal", "SuccessfulDelete", msg)
                .await;
            Ok(())
        }
        Err(e) => {
            if !e.is_not_found() {
                let msg = format!("Error deleting: {e}");
                control
                    .event_for(owner, "Warning", "FailedDelete", msg)
                    .await;
            }
            Err(e)
        }
    }
}

/// [`Control`] on a real API server.
pub struct KubeControl {
    client: kube::Client,
    seq: AtomicU64,
}

impl KubeControl {
    /// Writes through `client`.
    pub fn new(client: kube::Client) -> KubeControl {
        KubeControl {
            client,
            seq: AtomicU64::new(0),
        }
    }

    fn api(&self, res: &ApiResource, namespace: &str) -> Api<DynamicObject> {
        if namespace.is_empty() {
            Api::all_with(self.client.clone(), res)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, res)
        }
    }
}

fn name_of(obj: &Value) -> Result<String, ApiError> {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ApiError::Other("object has no name".into()))
}

#[async_trait]
impl Control for KubeControl {
    async fn create(
        &self,
        res: &ApiResource,
        namespace: &str,
        obj: Value,
    ) -> Result<Value, ApiError> {
        let obj: DynamicObject = serde_json::from_value(obj)?;
        let out = self
            .api(res, namespace)
            .create(&PostParams::default(), &obj)
            .await?;
        Ok(serde_json::to_value(out)?)
    }

    async fn update(
        &self,
        res: &ApiResource,
        namespace: &str,
        obj: Value,
    ) -> Result<Value, ApiError> {
        let name = name_of(&obj)?;
        let obj: DynamicObject = serde_json::from_value(obj)?;
        let out = self
            .api(res, namespace)
            .replace(&name, &PostParams::default(), &obj)
            .await?;
        Ok(serde_json::to_value(out)?)
    }

    async fn update_status(
        &self,
        res: &ApiResource,
        namespace: &str,
        obj: Value,
    ) -> Result<Value, ApiError> {
        let name = name_of(&obj)?;
        let obj: DynamicObject = serde_json::from_value(obj)?;
        let out = self
            .api(res, namespace)
            .replace_status(&name, &PostParams::default(), &obj)
            .await?;
        Ok(serde_json::to_value(out)?)
    }

    async fn patch(
        &self,
        res: &ApiResource,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, ApiError> {
        let out = self
            .api(res, namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(serde_json::to_value(out)?)
    }

    async fn delete(
        &self,
        res: &ApiResource,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        propagation: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut dp = DeleteParams::default();
        if let Some(uid) = uid {
            dp.preconditions = Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            });
        }
        dp.propagation_policy = match propagation {
            Some("Foreground") => Some(kube::api::PropagationPolicy::Foreground),
            Some("Orphan") => Some(kube::api::PropagationPolicy::Orphan),
            Some("Background") => Some(kube::api::PropagationPolicy::Background),
            _ => None,
        };
        self.api(res, namespace).delete(name, &dp).await?;
        Ok(())
    }

    async fn event(&self, involved: ObjectReference, type_: &str, reason: &str, message: String) {
        let now = k8s_openapi::jiff::Timestamp::now();
        let ns = involved
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}.{:x}",
            involved.name.as_deref().unwrap_or("unknown"),
            (now.as_nanosecond() as u64).wrapping_add(seq)
        );
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: involved,
            type_: Some(type_.to_string()),
            reason: Some(reason.to_string()),
            message: Some(message),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            reporting_component: Some("skiff-controller-manager".into()),
            reporting_instance: Some("skiff-controller-manager".into()),
            action: Some(reason.to_string()),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some("skiff-controller-manager".into()),
                host: None,
            }),
            ..Default::default()
        };
        // Events are best effort and must not slow the sync that records them.
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &ev).await {
                tracing::debug!(error = %e, "recording event failed");
            }
        });
    }
}

/// Which write a [`RecordingControl`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `create`.
    Create,
    /// `update`.
    Update,
    /// `update_status`.
    UpdateStatus,
    /// `patch`.
    Patch,
    /// `delete`.
    Delete,
}

/// One recorded write.
#[derive(Debug, Clone)]
pub struct Action {
    /// The verb.
    pub verb: Verb,
    /// The kind written (`Pod`, `ReplicaSet`, …).
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name (generated for creates with generateName).
    pub name: String,
    /// The object sent (the patch for `Patch`, none for `Delete`).
    pub object: Option<Value>,
}

/// A fake [`Control`] that records every write and answers as a server would.
#[derive(Default)]
pub struct RecordingControl {
    actions: Mutex<Vec<Action>>,
    events: Mutex<Vec<(String, String, String)>>,
    seq: AtomicU64,
    fail_creates: AtomicUsize,
    failures: Mutex<HashMap<Verb, ApiError>>,
}

impl RecordingControl {
    /// A fake with nothing recorded.
    pub fn new() -> RecordingControl {
        RecordingControl::default()
    }

    /// Makes the next `n` creates fail with a Forbidden error.
    pub fn fail_next_creates(&self, n: usize) {
        self.fail_creates.store(n, Ordering::SeqCst);
    }

    /// Makes every call of `verb` fail with `err`.
    pub fn fail(&self, verb: Verb, err: ApiError) {
        self.failures.lock().unwrap().insert(verb, err);
    }

    /// Every recorded write, in order.
    pub fn actions(&self) -> Vec<Action> {
        self.actions.lock().unwrap().clone()
    }

    /// The writes of `verb` on `kind`.
    pub fn of(&self, verb: Verb, kind: &str) -> Vec<Action> {
        self.actions()
            .into_iter()
            .filter(|a| a.verb == verb && a.kind == kind)
            .collect()
    }

    /// How many writes of `verb` on `kind` were made.
    pub fn count(&self, verb: Verb, kind: &str) -> usize {
        self.of(verb, kind).len()
    }

    /// Recorded events as (type, reason, message).
    pub fn events(&self) -> Vec<(String, String, String)> {
        self.events.lock().unwrap().clone()
    }

    /// Forgets everything recorded.
    pub fn clear(&self) {
        self.actions.lock().unwrap().clear();
        self.events.lock().unwrap().clear();
    }

    fn record(
        &self,
        verb: Verb,
        res: &ApiResource,
        namespace: &str,
        name: String,
        object: Option<Value>,
    ) -> Result<(), ApiError> {
        self.actions.lock().unwrap().push(Action {
            verb,
            kind: res.kind.clone(),
            namespace: namespace.to_string(),
            name,
            object,
        });
        match self.failures.lock().unwrap().get(&verb) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Control for RecordingControl {
    async fn create(
        &self,
        res: &ApiResource,
        namespace: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        if obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_none()
        {
            let prefix = obj
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            obj["metadata"]["name"] = Value::String(format!("{prefix}{n:05}"));
        }
        obj["metadata"]["uid"] = Value::String(format!("uid-{n}"));
        obj["metadata"]["resourceVersion"] = Value::String("1".into());
        let name = name_of(&obj)?;
        let fail = self
            .fail_creates
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        self.record(Verb::Create, res, namespace, name, Some(obj.clone()))?;
        if fail {
            return Err(ApiError::Status {
                code: 403,
                reason: "Forbidden".into(),
                message: "exceeded quota".into(),
            });
        }
        Ok(obj)
    }

    async fn update(
        &self,
        res: &ApiResource,
        namespace: &str,
        obj: Value,
    ) -> Result<Value, ApiError> {
        self.record(
            Verb::Update,
            res,
            namespace,
            name_of(&obj)?,
            Some(obj.clone()),
        )?;
        Ok(obj)
    }

    async fn update_status(
        &self,
        res: &ApiResource,
        namespace: &str,
        obj: Value,
    ) -> Result<Value, ApiError> {
        self.record(
            Verb::UpdateStatus,
            res,
            namespace,
            name_of(&obj)?,
            Some(obj.clone()),
        )?;
        Ok(obj)
    }

    async fn patch(
        &self,
        res: &ApiResource,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, ApiError> {
        self.record(
            Verb::Patch,
            res,
            namespace,
            name.to_string(),
            Some(patch.clone()),
        )?;
        let obj = serde_json::json!({
            "apiVersion": res.api_version, "kind": res.kind,
            "metadata": {"name": name, "namespace": namespace}
        });
        skiff_api::patch::apply_merge_patch(&obj, &patch)
            .map_err(|e| ApiError::Other(e.to_string()))
    }

    async fn delete(
        &self,
        res: &ApiResource,
        namespace: &str,
        name: &str,
        _uid: Option<&str>,
        _propagation: Option<&str>,
    ) -> Result<(), ApiError> {
        self.record(Verb::Delete, res, namespace, name.to_string(), None)
    }

    async fn event(&self, _involved: ObjectReference, type_: &str, reason: &str, message: String) {
        self.events
            .lock()
            .unwrap()
            .push((type_.into(), reason.into(), message));
    }
}
