//! Reads and writes beyond [`crate::runtime::Control`] that the housekeeping controllers
//! need: live GETs (the garbage collector verifies an owner's absence against the server,
//! never the cache), LIST and deletecollection (namespace deletion), force deletion (pod
//! GC) and the namespace `finalize` subresource. [`KubeLive`] talks to the API server,
//! [`FakeLive`] is an in-memory fake for tests that records every write.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams, Preconditions};
use kube::core::ApiResource;
use kube::Api;
use serde_json::Value;

use crate::runtime::ApiError;

/// The extra API calls, on untyped objects (namespace `""` for cluster-scoped ones).
#[async_trait]
pub trait Live: Send + Sync {
    /// The object as the server has it now, `None` when it does not exist.
    async fn get(
        &self,
        res: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError>;
    /// Every object of the resource in the namespace.
    async fn list(&self, res: &ApiResource, namespace: &str) -> Result<Vec<Value>, ApiError>;
    /// DELETE of the whole collection in the namespace (background propagation).
    async fn delete_collection(&self, res: &ApiResource, namespace: &str) -> Result<(), ApiError>;
    /// Deletes with a zero grace period (upstream's force deletion), only if the UID still is
    /// `uid` when given.
    async fn force_delete(
        &self,
        res: &ApiResource,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<(), ApiError>;
    /// PUT `namespaces/{name}/finalize` with `spec.finalizers` set to `finalizers`.
    async fn finalize_namespace(
        &self,
        ns: &Namespace,
        finalizers: Vec<String>,
    ) -> Result<(), ApiError>;
}

/// [`Live`] on a real API server.
pub struct KubeLive {
    client: kube::Client,
}

impl KubeLive {
    /// Calls through `client`.
    pub fn new(client: kube::Client) -> KubeLive {
        KubeLive { client }
    }

    fn api(&self, res: &ApiResource, namespace: &str) -> Api<DynamicObject> {
        if namespace.is_empty() {
            Api::all_with(self.client.clone(), res)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, res)
        }
    }
}

#[async_trait]
impl Live for KubeLive {
    async fn get(
        &self,
        res: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        match self.api(res, namespace).get_opt(name).await? {
            Some(o) => Ok(Some(serde_json::to_value(o)?)),
            None => Ok(None),
        }
    }

    async fn list(&self, res: &ApiResource, namespace: &str) -> Result<Vec<Value>, ApiError> {
        let list = self
            .api(res, namespace)
            .list(&ListParams::default())
            .await?;
        list.items
            .into_iter()
            .map(|o| serde_json::to_value(o).map_err(ApiError::from))
            .collect()
    }

    async fn delete_collection(&self, res: &ApiResource, namespace: &str) -> Result<(), ApiError> {
        self.api(res, namespace)
            .delete_collection(&DeleteParams::background(), &ListParams::default())
            .await?;
        Ok(())
    }

    async fn force_delete(
        &self,
        res: &ApiResource,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<(), ApiError> {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: uid.map(|u| Preconditions {
                uid: Some(u.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        self.api(res, namespace).delete(name, &dp).await?;
        Ok(())
    }

    async fn finalize_namespace(
        &self,
        ns: &Namespace,
        finalizers: Vec<String>,
    ) -> Result<(), ApiError> {
        let mut body = ns.clone();
        body.spec.get_or_insert_with(Default::default).finalizers = Some(finalizers);
        let name = body.metadata.name.clone().unwrap_or_default();
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.replace_subresource("finalize", &name, &PostParams::default(), &body)
            .await?;
        Ok(())
    }
}

/// One call a [`FakeLive`] saw: (verb, plural, namespace, name).
pub type LiveCall = (&'static str, String, String, String);

/// An in-memory [`Live`]: objects keyed by (plural, namespace, name); writes are recorded
/// and applied (deletes remove objects unless they carry finalizers, as a server would).
#[derive(Default)]
pub struct FakeLive {
    objects: Mutex<BTreeMap<(String, String, String), Value>>,
    calls: Mutex<Vec<LiveCall>>,
    finalized: Mutex<Vec<(String, Vec<String>)>>,
}

impl FakeLive {
    /// An empty fake.
    pub fn new() -> FakeLive {
        FakeLive::default()
    }

    /// Stores `obj` as an object of `plural`.
    pub fn insert(&self, plural: &str, obj: Value) {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        self.objects
            .lock()
            .unwrap()
            .insert((plural.into(), ns, name), obj);
    }

    /// Removes an object.
    pub fn remove(&self, plural: &str, namespace: &str, name: &str) {
        let key = (plural.to_string(), namespace.to_string(), name.to_string());
        self.objects.lock().unwrap().remove(&key);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<LiveCall> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls of one verb.
    pub fn calls_of(&self, verb: &str) -> Vec<LiveCall> {
        self.calls().into_iter().filter(|c| c.0 == verb).collect()
    }

    /// Namespaces finalized, with the finalizers sent.
    pub fn finalized(&self) -> Vec<(String, Vec<String>)> {
        self.finalized.lock().unwrap().clone()
    }

    fn record(&self, verb: &'static str, res: &ApiResource, ns: &str, name: &str) {
        self.calls
            .lock()
            .unwrap()
            .push((verb, res.plural.clone(), ns.into(), name.into()));
    }
}

fn has_finalizers(v: &Value) -> bool {
    v["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

#[async_trait]
impl Live for FakeLive {
    async fn get(
        &self,
        res: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        self.record("get", res, namespace, name);
        let key = (res.plural.clone(), namespace.to_string(), name.to_string());
        Ok(self.objects.lock().unwrap().get(&key).cloned())
    }

    async fn list(&self, res: &ApiResource, namespace: &str) -> Result<Vec<Value>, ApiError> {
        self.record("list", res, namespace, "");
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .iter()
            .filter(|((p, ns, _), _)| *p == res.plural && ns == namespace)
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn delete_collection(&self, res: &ApiResource, namespace: &str) -> Result<(), ApiError> {
        self.record("deletecollection", res, namespace, "");
        self.objects
            .lock()
            .unwrap()
            .retain(|(p, ns, _), v| !(*p == res.plural && ns == namespace) || has_finalizers(v));
        Ok(())
    }

    async fn force_delete(
        &self,
        res: &ApiResource,
        namespace: &str,
        name: &str,
        _uid: Option<&str>,
    ) -> Result<(), ApiError> {
        self.record("forcedelete", res, namespace, name);
        self.remove(&res.plural, namespace, name);
        Ok(())
    }

    async fn finalize_namespace(
        &self,
        ns: &Namespace,
        finalizers: Vec<String>,
    ) -> Result<(), ApiError> {
        let name = ns.metadata.name.clone().unwrap_or_default();
        self.finalized.lock().unwrap().push((name, finalizers));
        Ok(())
    }
}
