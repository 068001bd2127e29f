//! API semantics through the `kube` client against an in-process server on the memory store:
//! finalizers, graceful deletion, status subresource, namespace lifecycle, dry run,
//! generateName, field validation, tables, selectors in watches, and error statuses.

mod common;

use common::*;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, Client};
use serde_json::{json, Value};

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn status_of(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn raw(
    client: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .body(body)
        .unwrap();
    match client.request_text(req).await {
        Ok(t) => (200, serde_json::from_str(&t).unwrap_or(Value::String(t))),
        Err(kube::Error::Api(s)) => (s.code, json!({"reason": s.reason, "message": s.message})),
        Err(e) => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let c = start().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    api.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "f", "finalizers": ["example.com/hold"]}})),
    )
    .await
    .unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let held = api.get("f").await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "deletionTimestamp set"
    );
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(status_of(api.get("f").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn bound_pods_delete_gracefully_unbound_at_once() {
    let c = start().await;
    let api: Api<Pod> = Api::namespaced(c.clone(), "default");
    let pod = |name: &str| -> Pod {
        obj(
            json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}),
        )
    };
    api.create(&PostParams::default(), &pod("free"))
        .await
        .unwrap();
    api.delete("free", &DeleteParams::default()).await.unwrap();
    assert_eq!(status_of(api.get("free").await.unwrap_err()).code, 404);

    let created = api
        .create(&PostParams::default(), &pod("bound"))
        .await
        .unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    let spec = created.spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"), "defaulted");
    // Binding, then graceful deletion.
    let (code, _) = raw(&c, "POST", "/api/v1/namespaces/default/pods/bound/binding", "application/json",
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"}, "target": {"kind": "Node", "name": "n1"}})).unwrap()).await;
    assert_eq!(code, 200);
    let (code, body) = raw(&c, "POST", "/api/v1/namespaces/default/pods/bound/binding", "application/json",
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"}, "target": {"kind": "Node", "name": "n2"}})).unwrap()).await;
    assert_eq!(code, 409, "{body}");
    api.delete("bound", &DeleteParams::default()).await.unwrap();
    let p = api.get("bound").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    api.delete(
        "bound",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(status_of(api.get("bound").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn status_subresource_separates_spec_and_status() {
    let c = start().await;
    let api: Api<Service> = Api::namespaced(c, "default");
    api.create(&PostParams::default(), &obj(json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}], "selector": {"a": "b"}}})))
        .await
        .unwrap();
    let lb = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}, "spec": {"selector": {"changed": "yes"}}});
    api.patch_status("s", &PatchParams::default(), &Patch::Merge(lb.clone()))
        .await
        .unwrap();
    let s = api.get("s").await.unwrap();
    assert_eq!(
        s.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0]
            .ip
            .as_deref(),
        Some("192.0.2.1")
    );
    assert_eq!(
        s.spec.as_ref().unwrap().selector.as_ref().unwrap()["a"],
        "b",
        "status update ignores spec"
    );
    // A main-resource update ignores status.
    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {}}})),
    )
    .await
    .unwrap();
    assert!(api
        .get("s")
        .await
        .unwrap()
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .is_some());
}

#[tokio::test]
async fn namespace_lifecycle_and_dry_run() {
    let c = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "missing");
    let e = status_of(
        cms.create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "x"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "namespaces \"missing\" not found");

    let nss: Api<Namespace> = Api::all(c.clone());
    nss.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "gone"}})),
    )
    .await
    .unwrap();
    nss.delete("gone", &DeleteParams::default()).await.unwrap();
    let ns = nss.get("gone").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "gone");
    let e = status_of(
        cms.create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "x"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    assert!(
        e.message.contains("because it is being terminated"),
        "{}",
        e.message
    );

    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let made = cms
        .create(&pp, &obj(json!({"metadata": {"generateName": "gen-"}})))
        .await
        .unwrap();
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert_eq!(
        status_of(cms.get(&name).await.unwrap_err()).code,
        404,
        "dry run wrote nothing"
    );
}

#[tokio::test]
async fn bad_requests_get_upstream_statuses_and_write_nothing() {
    let c = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let before = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let path = "/api/v1/namespaces/default/configmaps";
    let (code, _) = raw(&c, "POST", path, "application/json", b"{not json".to_vec()).await;
    assert_eq!(code, 400);
    let (code, _) = raw(&c, "POST", path, "text/plain", b"{}".to_vec()).await;
    assert_eq!(code, 415);
    let (code, b) = raw(
        &c,
        "POST",
        path,
        "application/json",
        br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{b}");
    let big = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"a": "x".repeat(3 * 1024 * 1024)}})).unwrap();
    let (code, _) = raw(&c, "POST", path, "application/json", big).await;
    assert_eq!(code, 413);
    let (code, b) = raw(
        &c,
        "POST",
        &format!("{path}?fieldValidation=Strict"),
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"u"},"dta":{}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"dta\""),
        "{b}"
    );
    let (code, b) = raw(
        &c,
        "POST",
        path,
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 422, "{b}");
    let (code, _) = raw(
        &c,
        "PUT",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(code, 405);
    let (code, _) = raw(&c, "GET", "/api/v1/widgets", "application/json", Vec::new()).await;
    assert_eq!(code, 404);
    let after = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    assert_eq!(before, after, "no write happened");
}

#[tokio::test]
async fn tables_have_upstream_columns() {
    let c = start().await;
    let req = http::Request::get("/api/v1/namespaces/default/services")
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let t: Value = serde_json::from_str(&c.request_text(req).await.unwrap()).unwrap();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        cols[..6],
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age"
        ]
    );
    assert_eq!(t["rows"][0]["cells"][0], "kubernetes");
    assert_eq!(t["rows"][0]["cells"][2], "10.43.0.1");
    assert_eq!(t["rows"][0]["cells"][4], "443/TCP");
}

#[tokio::test]
async fn watch_with_label_selector_sees_objects_enter_and_leave() {
    let c = start().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut w = api
        .watch(&WatchParams::default().labels("team=a").timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "x", "labels": {"team": "b"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "c"}}})),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(match ev {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(seen, ["ADDED", "MODIFIED", "DELETED"]);
}

#[tokio::test]
async fn server_side_apply_creates_and_tracks_managers() {
    let c = start().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}});
    let cm = api
        .patch("ssa", &PatchParams::apply("tool-a"), &Patch::Apply(applied))
        .await
        .unwrap();
    let mf = cm.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("tool-a"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let e = status_of(
        api.patch("ssa", &PatchParams::apply("tool-b"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "2"}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert!(
        e.message.contains("conflict with \"tool-a\""),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn events_expire_after_their_ttl() {
    let c = start_with_event_ttl(Duration::from_secs(1)).await;
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(c, "default");
    let ev = |name: &str, last: &str| -> k8s_openapi::api::core::v1::Event {
        obj(
            json!({"metadata": {"name": name}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                   "reason": "Test", "message": "m", "type": "Normal", "lastTimestamp": last}),
        )
    };
    api.create(&PostParams::default(), &ev("old", "2020-01-01T00:00:00Z"))
        .await
        .unwrap();
    api.create(
        &PostParams::default(),
        &ev("future", "2999-01-01T00:00:00Z"),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if api.get_opt("old").await.unwrap().is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expired event not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        api.get_opt("future").await.unwrap().is_some(),
        "live event kept"
    );
}

/// Updates start from the watch cache's copy of an object; concurrent writers race on it, and
/// the compare-and-swap must make every one of them land, none lost to a stale copy.
#[tokio::test]
async fn concurrent_patches_on_cached_copies_all_land() {
    let c = start().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    api.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "race"}})),
    )
    .await
    .unwrap();
    let writers = 24;
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                let patch = json!({"data": {format!("k{i}"): format!("v{i}")}});
                api.patch("race", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let data = api.get("race").await.unwrap().data.unwrap_or_default();
    assert_eq!(data.len(), writers, "every patch landed: {data:?}");
    // A conditional update on an outdated resourceVersion still conflicts.
    let mut stale = api.get("race").await.unwrap();
    api.patch(
        "race",
        &PatchParams::default(),
        &Patch::Merge(&json!({"data": {"later": "x"}})),
    )
    .await
    .unwrap();
    stale.data = None;
    let e = status_of(
        api.replace("race", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
}
