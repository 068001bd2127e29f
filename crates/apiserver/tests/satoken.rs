//! Bound service-account tokens end to end against an in-process API server: TokenRequest,
//! bearer authentication with the issued tokens, OIDC discovery, and the token volume that
//! ServiceAccount admission mounts.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use skiff_apiserver::satoken::{self, Bound, ClaimRef, Issuer, DEFAULT_ISSUER};
use skiff_apiserver::{ApiServer, Config as ServerConfig};
use skiff_store::MemoryStore;

struct Harness {
    server: ApiServer,
    client: Client,
    addr: std::net::SocketAddr,
}

async fn start() -> Harness {
    let server = ApiServer::new(ServerConfig {
        store: Arc::new(MemoryStore::new()),
        advertise_address: "127.0.0.1".parse().unwrap(),
        port: 6443,
        tokens: None,
        event_ttl: Duration::from_secs(3600),
        insecure_anonymous_admin: true,
        default_toleration_seconds: (300, 300),
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(skiff_apiserver::serve(
        server.clone(),
        listener,
        None,
        std::future::pending(),
    ));
    let client =
        Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap())).unwrap();
    Harness {
        server,
        client,
        addr,
    }
}

impl Harness {
    /// A raw request; returns status code and JSON body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = http::Request::builder().method(method).uri(path);
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                serde_json::to_vec(&b).unwrap()
            }
            None => Vec::new(),
        };
        let resp = self
            .client
            .send(req.body(kube::client::Body::from(body)).unwrap())
            .await
            .unwrap();
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn token_request(&self, ns: &str, sa: &str, spec: Value) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"),
            None,
            Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})),
        )
        .await
    }

    async fn token(&self, ns: &str, sa: &str, spec: Value) -> String {
        let (code, tr) = self.token_request(ns, sa, spec).await;
        assert_eq!(code, 201, "{tr}");
        tr["status"]["token"].as_str().unwrap().to_string()
    }

    /// The status code of a GET authenticated with `token`.
    async fn auth_code(&self, token: &str) -> u16 {
        self.call("GET", "/api/v1/namespaces/default/pods", Some(token), None)
            .await
            .0
    }

    async fn create_sa(&self, ns: &str, name: &str, extra: Value) -> ServiceAccount {
        let mut sa =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}});
        if let (Some(o), Some(e)) = (sa.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        Api::<ServiceAccount>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &serde_json::from_value(sa).unwrap())
            .await
            .unwrap()
    }

    async fn create_pod(&self, ns: &str, name: &str, sa: &str) -> Pod {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"serviceAccountName": sa, "containers": [{"name": "c", "image": "busybox"}]}});
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(pod).unwrap(),
            )
            .await
            .unwrap()
    }
}

fn payload(token: &str) -> Value {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

fn parse_time(s: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s.as_str().unwrap())
        .unwrap()
        .timestamp()
}

#[tokio::test]
async fn token_request_issues_tokens_that_authenticate() {
    let h = start().await;
    let sa = h.create_sa("default", "builder", json!({})).await;
    let before = chrono::Utc::now().timestamp();
    let (code, tr) = h.token_request("default", "builder", json!({})).await;
    assert_eq!(code, 201, "{tr}");
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(tr["spec"]["audiences"], json!([DEFAULT_ISSUER]));
    assert_eq!(tr["spec"]["expirationSeconds"], 3600);
    let exp = parse_time(&tr["status"]["expirationTimestamp"]);
    assert!((before + 3600..=before + 3602).contains(&exp), "{exp}");
    let token = tr["status"]["token"].as_str().unwrap();
    let c = payload(token);
    assert_eq!(c["iss"], DEFAULT_ISSUER);
    assert_eq!(c["sub"], "system:serviceaccount:default:builder");
    assert_eq!(c["exp"].as_i64().unwrap(), exp);
    assert_eq!(
        c["kubernetes.io"],
        json!({"namespace": "default", "serviceaccount": {"name": "builder", "uid": sa.metadata.uid.unwrap()}})
    );
    assert!(c["jti"].is_string() && c["nbf"] == c["iat"]);

    // The token authenticates; garbage and other keys' tokens get 401 like any bad token.
    assert_eq!(h.auth_code(token).await, 200);
    assert_eq!(h.auth_code("eyJhbGciOiJFUzI1NiJ9.e30.AAAA").await, 401);
    let mut forged: Vec<&str> = token.split('.').collect();
    let other = Issuer::new().unwrap().sign(&c);
    forged[2] = other.split('.').nth(2).unwrap();
    assert_eq!(h.auth_code(&forged.join(".")).await, 401);
    let (code, status) = h
        .call("GET", "/api/v1/namespaces/default/pods", Some(&other), None)
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (401, Some("Unauthorized"))
    );

    // Signed by the server but expired (beyond the minute of leeway), or for another audience.
    let issuer = h.server.service_account_issuer();
    let sa_ref = ClaimRef {
        name: "builder".into(),
        uid: c["kubernetes.io"]["serviceaccount"]["uid"]
            .as_str()
            .unwrap()
            .into(),
    };
    let now = chrono::Utc::now().timestamp();
    let auds = [DEFAULT_ISSUER.to_string()];
    let expired = issuer.sign(&satoken::claims(
        DEFAULT_ISSUER,
        "default",
        &sa_ref,
        &Bound::default(),
        &auds,
        now - 7200,
        3600,
        None,
    ));
    assert_eq!(h.auth_code(&expired).await, 401);
    let valid = issuer.sign(&satoken::claims(
        DEFAULT_ISSUER,
        "default",
        &sa_ref,
        &Bound::default(),
        &auds,
        now - 60,
        3600,
        None,
    ));
    assert_eq!(h.auth_code(&valid).await, 200);
    let foreign = issuer.sign(&satoken::claims(
        DEFAULT_ISSUER,
        "default",
        &sa_ref,
        &Bound::default(),
        &["vault".into()],
        now,
        3600,
        None,
    ));
    assert_eq!(h.auth_code(&foreign).await, 401);

    // A token asking for another audience says so, and is not accepted by the API server.
    let vault = h
        .token(
            "default",
            "builder",
            json!({"audiences": ["vault"], "expirationSeconds": 600}),
        )
        .await;
    assert_eq!(payload(&vault)["aud"], json!(["vault"]));
    assert_eq!(h.auth_code(&vault).await, 401);

    // Deleting the service account invalidates its tokens, even once it is recreated.
    let sas = Api::<ServiceAccount>::namespaced(h.client.clone(), "default");
    sas.delete("builder", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(h.auth_code(token).await, 401);
    h.create_sa("default", "builder", json!({})).await;
    assert_eq!(h.auth_code(token).await, 401);
    let fresh = h.token("default", "builder", json!({})).await;
    assert_eq!(h.auth_code(&fresh).await, 200);
}

#[tokio::test]
async fn pod_bound_tokens_follow_the_pod() {
    let h = start().await;
    h.create_sa("default", "runner", json!({})).await;
    let pod = h.create_pod("default", "web", "runner").await;
    let uid = pod.metadata.uid.clone().unwrap();
    let bound =
        json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": uid}});
    let (code, tr) = h.token_request("default", "runner", bound.clone()).await;
    assert_eq!(code, 201, "{tr}");
    assert_eq!(tr["spec"]["boundObjectRef"]["name"], "web");
    let token = tr["status"]["token"].as_str().unwrap().to_string();
    assert_eq!(
        payload(&token)["kubernetes.io"]["pod"],
        json!({"name": "web", "uid": uid})
    );
    assert_eq!(h.auth_code(&token).await, 200);

    // kube-api-access tokens (3607 s) live a year, with the requested lifetime as warnafter;
    // the status still reports the requested expiry.
    let before = chrono::Utc::now().timestamp();
    let mut spec = bound.clone();
    spec["expirationSeconds"] = json!(3607);
    let (code, tr) = h.token_request("default", "runner", spec).await;
    assert_eq!(code, 201, "{tr}");
    let c = payload(tr["status"]["token"].as_str().unwrap());
    assert!(c["exp"].as_i64().unwrap() >= before + 365 * 24 * 3600);
    assert!(c["kubernetes.io"]["warnafter"].as_i64().unwrap() >= before + 3607);
    let exp = parse_time(&tr["status"]["expirationTimestamp"]);
    assert!((before + 3607..=before + 3609).contains(&exp));

    // Once the pod is gone (or replaced by one with another uid) the token stops working.
    let pods = Api::<Pod>::namespaced(h.client.clone(), "default");
    pods.delete("web", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pods.get_opt("web").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "pod not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.auth_code(&token).await, 401);
    h.create_pod("default", "web", "runner").await;
    assert_eq!(h.auth_code(&token).await, 401);
    // A pod on a node: the token names the node too, and stays valid while the pod
    // terminates gracefully.
    let node = h
        .call(
            "POST",
            "/api/v1/nodes",
            None,
            Some(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})),
        )
        .await
        .1;
    let (code, placed) = h
        .call(
            "POST",
            "/api/v1/namespaces/default/pods",
            None,
            Some(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "placed"},
                "spec": {"serviceAccountName": "runner", "nodeName": "n1",
                         "containers": [{"name": "c", "image": "busybox"}]}}),
            ),
        )
        .await;
    assert_eq!(code, 201, "{placed}");
    let token = h
        .token(
            "default",
            "runner",
            json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "placed"}}),
        )
        .await;
    assert_eq!(
        payload(&token)["kubernetes.io"]["node"],
        json!({"name": "n1", "uid": node["metadata"]["uid"]})
    );
    let (code, deleting) = h
        .call(
            "DELETE",
            "/api/v1/namespaces/default/pods/placed",
            None,
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert!(
        deleting["metadata"]["deletionTimestamp"].is_string(),
        "{deleting}"
    );
    assert_eq!(h.auth_code(&token).await, 200);

    // A stale uid in the request conflicts.
    let (code, st) = h.token_request("default", "runner", bound).await;
    assert_eq!(code, 409, "{st}");
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("does not match the UID in record"));
}

#[tokio::test]
async fn token_request_validation_matches_upstream() {
    let h = start().await;
    h.create_sa("default", "builder", json!({})).await;
    h.create_sa("default", "other", json!({})).await;
    h.create_pod("default", "web", "other").await;

    let (code, st) = h
        .token_request("default", "builder", json!({"expirationSeconds": 599}))
        .await;
    assert_eq!(code, 422, "{st}");
    assert_eq!(
        st["message"],
        "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
    );
    assert_eq!(
        st["details"]["causes"][0]["field"],
        "spec.expirationSeconds"
    );

    let (code, st) = h.token_request("default", "missing", json!({})).await;
    assert_eq!(code, 404, "{st}");
    assert_eq!(st["message"], "serviceaccounts \"missing\" not found");

    let (code, st) = h
        .token_request(
            "default",
            "builder",
            json!({"boundObjectRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}}),
        )
        .await;
    assert_eq!(code, 400, "{st}");
    assert_eq!(
        st["message"],
        "cannot bind token to object of type apps/v1, Kind=Deployment"
    );

    let (code, st) = h
        .token_request(
            "default",
            "builder",
            json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "nope"}}),
        )
        .await;
    assert_eq!(code, 404, "{st}");
    assert_eq!(st["message"], "pods \"nope\" not found");

    let (code, st) = h
        .token_request(
            "default",
            "builder",
            json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web"}}),
        )
        .await;
    assert_eq!(code, 400, "{st}");
    assert_eq!(
        st["message"],
        "cannot bind token for serviceaccount \"builder\" to pod running with serviceaccount \"other\""
    );

    // Secret-bound tokens die with the secret.
    let secret = h
        .call(
            "POST",
            "/api/v1/namespaces/default/secrets",
            None,
            Some(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})),
        )
        .await
        .1;
    let token = h
        .token("default", "builder", json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": "s", "uid": secret["metadata"]["uid"]}}))
        .await;
    assert_eq!(payload(&token)["kubernetes.io"]["secret"]["name"], "s");
    assert_eq!(h.auth_code(&token).await, 200);
    h.call("DELETE", "/api/v1/namespaces/default/secrets/s", None, None)
        .await;
    assert_eq!(h.auth_code(&token).await, 401);

    // Node-bound tokens die with the node.
    h.call(
        "POST",
        "/api/v1/nodes",
        None,
        Some(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}})),
    )
    .await;
    let token = h
        .token(
            "default",
            "builder",
            json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Node", "name": "n2"}}),
        )
        .await;
    assert_eq!(payload(&token)["kubernetes.io"]["node"]["name"], "n2");
    assert!(payload(&token)["kubernetes.io"].get("pod").is_none());
    assert_eq!(h.auth_code(&token).await, 200);
    h.call("DELETE", "/api/v1/nodes/n2", None, None).await;
    assert_eq!(h.auth_code(&token).await, 401);

    // The body may not name another service account.
    let (code, st) = h
        .call("POST", "/api/v1/namespaces/default/serviceaccounts/builder/token", None,
            Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {"name": "other"}, "spec": {}})))
        .await;
    assert_eq!(code, 422, "{st}");
    // Only POST.
    let (code, _) = h
        .call(
            "GET",
            "/api/v1/namespaces/default/serviceaccounts/builder/token",
            None,
            None,
        )
        .await;
    assert_eq!(code, 405);
}

#[tokio::test]
async fn token_request_in_protobuf() {
    let h = start().await;
    h.create_sa("default", "builder", json!({})).await;
    let body = skiff_protobuf::encode(&json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 1200},
    }))
    .unwrap();
    let req = http::Request::post("/api/v1/namespaces/default/serviceaccounts/builder/token")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .header("accept", "application/vnd.kubernetes.protobuf")
        .body(kube::client::Body::from(body))
        .unwrap();
    let resp = h.client.send(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let tr = skiff_protobuf::decode(&bytes).unwrap();
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["spec"]["expirationSeconds"], 1200);
    let token = tr["status"]["token"].as_str().unwrap();
    assert_eq!(h.auth_code(token).await, 200);
}

#[tokio::test]
async fn openid_discovery_serves_the_signing_key() {
    let h = start().await;
    let (code, doc) = h
        .call("GET", "/.well-known/openid-configuration", None, None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(doc["issuer"], DEFAULT_ISSUER);
    assert_eq!(doc["jwks_uri"], "https://127.0.0.1:6443/openid/v1/jwks");
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    let (code, jwks) = h.call("GET", "/openid/v1/jwks", None, None).await;
    assert_eq!(code, 200);
    h.create_sa("default", "builder", json!({})).await;
    let token = h.token("default", "builder", json!({})).await;
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
}

#[tokio::test]
async fn signing_key_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let h = start().await;
    let path = h.server.load_service_account_key(dir.path()).unwrap();
    h.create_sa("default", "builder", json!({})).await;
    let token = h.token("default", "builder", json!({})).await;
    assert_eq!(h.auth_code(&token).await, 200);
    // A second server on the same data (here: the same key file) accepts it.
    let kid = h.server.service_account_issuer().key().kid().to_string();
    let h2 = start().await;
    assert_ne!(h2.server.service_account_issuer().key().kid(), kid);
    assert_eq!(
        h2.server.load_service_account_key(dir.path()).unwrap(),
        path
    );
    assert_eq!(h2.server.service_account_issuer().key().kid(), kid);
    assert!(h2
        .server
        .service_account_issuer()
        .verify(&token, chrono::Utc::now().timestamp())
        .is_ok());
}

#[tokio::test]
async fn admission_mounts_the_token_volume() {
    let h = start().await;
    h.create_sa(
        "default",
        "default",
        json!({"imagePullSecrets": [{"name": "regcred"}]}),
    )
    .await;
    h.create_sa(
        "default",
        "quiet",
        json!({"automountServiceAccountToken": false}),
    )
    .await;

    // Off by default.
    let pod = h.create_pod("default", "plain", "default").await;
    assert!(pod.spec.as_ref().unwrap().volumes.is_none());

    h.server.set_mount_service_account_token(true);
    let (code, pod) = h
        .call(
            "POST",
            "/api/v1/namespaces/default/pods",
            None,
            Some(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"initContainers": [{"name": "i", "image": "busybox"}],
                         "containers": [{"name": "c", "image": "busybox"}]}}),
            ),
        )
        .await;
    assert_eq!(code, 201, "{pod}");
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "regcred"}]));
    let vol = &spec["volumes"][0];
    let name = vol["name"].as_str().unwrap();
    assert!(
        name.starts_with("kube-api-access-") && name.len() == 21,
        "{name}"
    );
    assert_eq!(vol["projected"]["defaultMode"], 420);
    assert_eq!(
        vol["projected"]["sources"][0]["serviceAccountToken"],
        json!({"expirationSeconds": 3607, "path": "token"})
    );
    assert_eq!(
        vol["projected"]["sources"][1]["configMap"]["name"],
        "kube-root-ca.crt"
    );
    assert_eq!(
        vol["projected"]["sources"][2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    for c in [&spec["initContainers"][0], &spec["containers"][0]] {
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}])
        );
    }

    // Opted out on the service account, or on the pod.
    let pod = h.create_pod("default", "q", "quiet").await;
    assert!(pod.spec.unwrap().volumes.is_none());
    let (_, pod) = h
        .call("POST", "/api/v1/namespaces/default/pods", None,
            Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "r"},
                "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "busybox"}]}})))
        .await;
    assert!(pod["spec"].get("volumes").is_none(), "{pod}");
}

#[tokio::test]
async fn kubectl_create_token() {
    let h = start().await;
    h.create_sa("default", "builder", json!({})).await;
    let server = format!("http://{}", h.addr);
    let out = kubectl(
        &server,
        &["create", "token", "builder", "--duration", "20m"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let c = payload(&token);
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        1200
    );
    assert_eq!(h.auth_code(&token).await, 200);

    let out = kubectl(&server, &["create", "token", "nobody"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("serviceaccounts \"nobody\" not found"));
}

async fn kubectl(server: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new("kubectl");
    cmd.arg("--server")
        .arg(server)
        .args(args)
        .env("KUBECONFIG", "/dev/null");
    tokio::task::spawn_blocking(move || cmd.output().expect("kubectl runs"))
        .await
        .unwrap()
}
