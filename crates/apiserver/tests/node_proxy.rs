//! The subresources node agents serve (`pods/log`, `pods/exec`, `nodes/proxy`) through an
//! in-process API server to a fake agent, and the join endpoints.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{AsyncBufReadExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{LogParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type FakeBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// A fake agent: logs echo their path and query in two chunks; `previous` fails as the agent
/// does; upgrades answer 101 and then echo the request line followed by every byte received;
/// anything else answers its path.
async fn fake_agent() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |mut req: http::Request<hyper::body::Incoming>| async move {
                        let pq = req.uri().path_and_query().unwrap().to_string();
                        let resp: http::Response<FakeBody> = if req
                            .headers()
                            .contains_key("upgrade")
                        {
                            let on = hyper::upgrade::on(&mut req);
                            let line = format!("{} {pq}\n", req.method());
                            tokio::spawn(async move {
                                let up = on.await.unwrap();
                                let mut io = TokioIo::new(up);
                                io.write_all(line.as_bytes()).await.unwrap();
                                let mut buf = [0u8; 1024];
                                loop {
                                    let n = io.read(&mut buf).await.unwrap_or(0);
                                    if n == 0 {
                                        break;
                                    }
                                    io.write_all(&buf[..n]).await.unwrap();
                                }
                            });
                            http::Response::builder()
                                .status(101)
                                .header("connection", "Upgrade")
                                .header("upgrade", "SPDY/3.1")
                                .header("x-stream-protocol-version", "v4.channel.k8s.io")
                                .body(Full::new(Bytes::new()).boxed_unsync())
                                .unwrap()
                        } else if pq.contains("previous=true") {
                            http::Response::builder()
                            .status(400)
                            .body(
                                Full::new(Bytes::from(
                                    "previous terminated container \"c\" in pod \"p\" not found\n",
                                ))
                                .boxed_unsync(),
                            )
                            .unwrap()
                        } else if pq.starts_with("/containerLogs/") {
                            let chunks = vec![
                                Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{pq}\n")))),
                                Ok(Frame::data(Bytes::from("second line\n"))),
                            ];
                            http::Response::builder()
                                .status(200)
                                .header("content-type", "text/plain")
                                .body(StreamBody::new(futures::stream::iter(chunks)).boxed_unsync())
                                .unwrap()
                        } else {
                            http::Response::builder()
                                .status(200)
                                .body(Full::new(Bytes::from(pq)).boxed_unsync())
                                .unwrap()
                        };
                        Ok::<_, Infallible>(resp)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    port
}

async fn start() -> (Client, std::net::SocketAddr) {
    let server = skiff_apiserver::memory_server_for_tests(true).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(skiff_apiserver::serve(
        server,
        listener,
        None,
        std::future::pending(),
    ));
    let client = Client::try_from(Config::new(format!("http://{addr}").parse().unwrap())).unwrap();
    (client, addr)
}

async fn node_and_pod(client: &Client, agent_port: u16) {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "n1"}})).unwrap(),
        )
        .await
        .unwrap();
    nodes
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": agent_port}},
            }})),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "two"},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn pod_logs_reach_the_agent() {
    let port = fake_agent().await;
    let (client, _) = start().await;
    node_and_pod(&client, port).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let text = pods
        .logs(
            "p",
            &LogParams {
                tail_lines: Some(3),
                timestamps: true,
                limit_bytes: Some(100),
                since_seconds: Some(60),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("/containerLogs/default/p/c?"), "{first}");
    for q in [
        "timestamps=true",
        "tailLines=3",
        "limitBytes=100",
        "sinceSeconds=60",
    ] {
        assert!(first.contains(q), "{first} lacks {q}");
    }
    assert!(text.ends_with("second line\n"));

    // Streaming (follow) delivers the agent's chunks as they come.
    let mut lines = pods
        .log_stream(
            "p",
            &LogParams {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .lines();
    let l = lines.next().await.unwrap().unwrap();
    assert_eq!(l, "/containerLogs/default/p/c?follow=true");

    // The agent's error text becomes a Status with its code.
    let err = pods
        .logs(
            "p",
            &LogParams {
                previous: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 400);
            assert_eq!(
                s.message,
                "previous terminated container \"c\" in pod \"p\" not found"
            );
        }
        other => panic!("{other:?}"),
    }

    // Container defaulting and validation happen in the API server, as upstream.
    let err = pods.logs("two", &LogParams::default()).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 400
            && s.message == "a container name must be specified for pod two, choose one of: [a b]"),
        "{err:?}"
    );
    let err = pods
        .logs(
            "p",
            &LogParams {
                container: Some("zzz".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 400 && s.message == "container zzz is not valid for pod p"),
        "{err:?}"
    );
    let err = pods.logs("nope", &LogParams::default()).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "{err:?}"
    );
}

#[tokio::test]
async fn exec_upgrades_and_splices_to_the_agent() {
    let port = fake_agent().await;
    let (client, addr) = start().await;
    node_and_pod(&client, port).await;

    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = "POST /api/v1/namespaces/default/pods/p/exec?command=echo&command=hi&stdout=true HTTP/1.1\r\n\
Host: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
Content-Length: 0\r\n\r\n";
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let want_line = "POST /exec/default/p/c?command=echo&command=hi&stdout=true\n";
    while !String::from_utf8_lossy(&got).contains(want_line) {
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut buf))
            .await
            .expect("agent's echo in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    // Bytes flow both ways unchanged after the switch.
    tcp.write_all(b"\x80\x03\x00\x01ping").await.unwrap();
    let mut echo = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"\x80\x03\x00\x01ping");

    // A pod without a node cannot be exec'ed into.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pending"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let resp = client
        .request_text(
            http::Request::post("/api/v1/namespaces/default/pods/pending/exec?command=true")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&resp, kube::Error::Api(s) if s.code == 400 && s.message == "pod pending does not have a host assigned"),
        "{resp:?}"
    );
}

#[tokio::test]
async fn node_proxy_forwards_the_rest_of_the_path() {
    let port = fake_agent().await;
    let (client, _) = start().await;
    node_and_pod(&client, port).await;
    let text = client
        .request_text(
            http::Request::get("/api/v1/nodes/n1/proxy/stats/summary?only_cpu_and_memory=true")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(text, "/stats/summary?only_cpu_and_memory=true");
    let err = client
        .request_text(
            http::Request::get("/api/v1/nodes/ghost/proxy/healthz")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "{err:?}"
    );
}

/// One HTTPS request to the API server; returns status and body.
async fn https(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, Bytes) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let conn = tokio_rustls::TlsConnector::from(tls)
        .connect(
            rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
            tcp,
        )
        .await
        .unwrap();
    let (mut sender, c) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
        .await
        .unwrap();
    tokio::spawn(c);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn join_endpoints_check_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let opts = skiff_pki::PkiOptions {
        host_name: String::new(),
        host_addresses: vec!["127.0.0.1".parse().unwrap()],
        extra_sans: vec![],
    };
    let pki = Arc::new(skiff_pki::ensure(&dir.path().join("tls"), &opts).unwrap());
    let server = skiff_apiserver::memory_server_for_tests(false).await;
    let token = skiff_apiserver::join::enable_nodes(&server, dir.path(), pki.clone()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("token"))
            .unwrap()
            .trim(),
        token.to_string()
    );
    let tls = skiff_pki::server_tls_config(&pki).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(skiff_apiserver::serve(
        server,
        listener,
        Some(tls),
        std::future::pending(),
    ));
    let client_tls = skiff_pki::client_tls_config(pki.ca_cert_pem(), None).unwrap();

    let (code, ca) = https(addr, client_tls.clone(), "GET", "/cacerts", None, "").await;
    assert_eq!(code, 200);
    assert_eq!(
        skiff_apiserver::join::ca_hash(std::str::from_utf8(&ca).unwrap()),
        token.ca_hash
    );

    let body = r#"{"nodeName": "worker-1", "addresses": ["127.0.0.1"]}"#;
    let path = skiff_apiserver::join::NODE_CERT_PATH;
    let (code, _) = https(addr, client_tls.clone(), "POST", path, None, body).await;
    assert_eq!(code, 401);
    let (code, _) = https(addr, client_tls.clone(), "POST", path, Some("wrong"), body).await;
    assert_eq!(code, 401);
    let (code, out) = https(
        addr,
        client_tls.clone(),
        "POST",
        path,
        Some(&token.to_string()),
        body,
    )
    .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&out));
    let creds: skiff_apiserver::join::NodeCertificateResponse =
        serde_json::from_slice(&out).unwrap();

    // The issued client certificate authenticates as the node.
    let node_tls = skiff_pki::client_tls_config(
        &creds.ca_cert,
        Some((&creds.client_cert, &creds.client_key)),
    )
    .unwrap();
    let (code, _) = https(addr, node_tls, "GET", "/api/v1/nodes", None, "").await;
    assert_eq!(code, 200);
    let (code, _) = https(addr, client_tls, "GET", "/api/v1/nodes", None, "").await;
    assert_eq!(code, 401);
}
