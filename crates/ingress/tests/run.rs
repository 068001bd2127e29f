//! The controller against an in-process API server with two real HTTP backends on loopback:
//! routing by host and path, 404/502/503, HTTPS by SNI with the Secret's certificate, Ingress
//! status, and following changes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

async fn api_server() -> kube::Client {
    let server = skiff_apiserver::ApiServer::new(skiff_apiserver::Config {
        store: Arc::new(skiff_store::MemoryStore::new()),
        advertise_address: "127.0.0.1".parse().unwrap(),
        port: 6443,
        tokens: None,
        event_ttl: Duration::from_secs(3600),
        insecure_anonymous_admin: true,
        default_toleration_seconds: (300, 300),
    })
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(skiff_apiserver::serve(
        server,
        listener,
        None,
        std::future::pending(),
    ));
    kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap())).unwrap()
}

/// An HTTP backend answering every request with its name and the headers the proxy sets.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| async move {
                        let (req, body) = req.into_parts();
                        let sent = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let h = |n: &str| {
                            req.headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_string()
                        };
                        let body = format!(
                            "{name} {} path={} host={} xff={} xfh={} xfp={} body={}",
                            req.method,
                            req.uri.path(),
                            h("host"),
                            h("x-forwarded-for"),
                            h("x-forwarded-host"),
                            h("x-forwarded-proto"),
                            String::from_utf8_lossy(&sent),
                        );
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A backend that switches every request to a raw echo protocol (`Upgrade: echo`).
async fn upgrade_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|mut req: Request<_>| async move {
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(io) = upgrade.await {
                            let (mut r, mut w) = tokio::io::split(TokioIo::new(io));
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        }
                    });
                    let resp = hyper::Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("connection", "upgrade")
                        .header("upgrade", "echo")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// One GET over a fresh connection (plain, or TLS via `tls`) with the given Host header.
async fn get_over<S>(io: S, host: &str, path: &str) -> Result<(StatusCode, String), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    send_over(
        io,
        Request::get(path)
            .header("host", host)
            .body(String::new())
            .unwrap(),
    )
    .await
}

/// Sends `req` over a fresh HTTP/1.1 connection on `io`.
async fn send_over<S>(io: S, req: Request<String>) -> Result<(StatusCode, String), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<(StatusCode, String), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    get_over(tcp, host, path).await
}

/// A GET over TLS with `sni`, trusting only `ca`; over HTTP/2 when `h2` (negotiated by ALPN).
async fn get_tls(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    sni: &str,
    path: &str,
    h2: bool,
) -> Result<(StatusCode, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut config = config;
    if h2 {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    if !h2 {
        return get_over(tls, sni, path).await;
    }
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err("h2 not negotiated".into());
    }
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(format!("https://{sni}{path}"))
        .body(String::new())
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

/// Retries `check` until it succeeds, failing the test after a deadline.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Succeeds when a plain GET answers `want` with a body starting with `prefix`.
async fn expect(
    addr: SocketAddr,
    host: &str,
    path: &str,
    want: StatusCode,
    prefix: &str,
) -> Result<(), String> {
    let (status, body) = get(addr, host, path).await?;
    if status == want && body.starts_with(prefix) {
        Ok(())
    } else {
        Err(format!("{host}{path}: {status} {body:?}"))
    }
}

/// Asks `ws.test` for an upgrade and checks the bytes sent afterwards come back.
async fn upgrade_echo(addr: SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if tcp.read(&mut byte).await.map_err(|e| e.to_string())? == 0 {
            return Err(format!("closed after {:?}", String::from_utf8_lossy(&head)));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        return Err(head);
    }
    tcp.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut echo))
        .await
        .map_err(|_| "no echo".to_string())?
        .map_err(|e| e.to_string())?;
    if &echo == b"ping" {
        Ok(())
    } else {
        Err(format!("echo {echo:?}"))
    }
}

fn obj<T: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn slice(name: &str, service: &str, port_name: &str, port: u16) -> EndpointSlice {
    obj(json!({
        "metadata": { "name": name, "labels": { "kubernetes.io/service-name": service } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": ["127.0.0.1"], "conditions": { "ready": true } }],
        "ports": [{ "name": port_name, "port": port, "protocol": "TCP" }],
    }))
}

/// A CA and a `b.test` certificate it signed, as a `kubernetes.io/tls` Secret.
fn tls_secret() -> (CertificateDer<'static>, Secret) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ingress test ca");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["b.test".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let mut secret: Secret = obj(json!({
        "metadata": { "name": "b-tls" },
        "type": "kubernetes.io/tls",
    }));
    secret.data = Some(
        [
            ("tls.crt".into(), ByteString(leaf.pem().into_bytes())),
            (
                "tls.key".into(),
                ByteString(key.serialize_pem().into_bytes()),
            ),
        ]
        .into(),
    );
    (ca.der().clone(), secret)
}

#[tokio::test]
async fn routes_follow_ingresses_and_endpoints() {
    let client = api_server().await;
    let pp = PostParams::default();
    let a_addr = backend("a").await;
    let b_addr = backend("b").await;

    let classes: Api<IngressClass> = Api::all(client.clone());
    classes
        .create(&pp, &obj(skiff_ingress::skiff_ingress_class()))
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    for (name, ip, port_name) in [
        ("svc-a", "10.43.0.61", "http"),
        ("svc-b", "10.43.0.62", "web"),
        ("svc-empty", "10.43.0.63", "http"),
    ] {
        let svc = json!({
            "metadata": { "name": name },
            "spec": { "clusterIP": ip, "ports": [{ "name": port_name, "port": 80, "targetPort": 8080 }] },
        });
        services.create(&pp, &obj(svc)).await.unwrap();
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    slices
        .create(&pp, &slice("svc-a-1", "svc-a", "http", a_addr.port()))
        .await
        .unwrap();
    slices
        .create(&pp, &slice("svc-b-1", "svc-b", "web", b_addr.port()))
        .await
        .unwrap();
    let (ca, secret) = tls_secret();
    Api::<Secret>::namespaced(client.clone(), "default")
        .create(&pp, &secret)
        .await
        .unwrap();

    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), "default");
    let rule = |host: &str, path: &str, svc: &str, port: Value| {
        json!({ "host": host, "http": { "paths": [{ "path": path, "pathType": "Prefix",
                "backend": { "service": { "name": svc, "port": port } } }] } })
    };
    ingresses
        .create(
            &pp,
            &obj(json!({
                "metadata": { "name": "ing-a" },
                "spec": { "ingressClassName": "skiff",
                          "rules": [rule("a.test", "/", "svc-a", json!({ "number": 80 }))] },
            })),
        )
        .await
        .unwrap();
    // No class: served because `skiff` is the default IngressClass. The port is named.
    ingresses
        .create(
            &pp,
            &obj(json!({
                "metadata": { "name": "ing-b" },
                "spec": { "tls": [{ "hosts": ["b.test"], "secretName": "b-tls" }],
                          "rules": [rule("b.test", "/path", "svc-b", json!({ "name": "web" }))] },
            })),
        )
        .await
        .unwrap();
    ingresses
        .create(
            &pp,
            &obj(json!({
                "metadata": { "name": "ing-other" },
                "spec": { "ingressClassName": "nginx",
                          "rules": [rule("c.test", "/", "svc-a", json!({ "number": 80 }))] },
            })),
        )
        .await
        .unwrap();

    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, https_addr) = (http.local_addr().unwrap(), https.local_addr().unwrap());
    let mut config = skiff_ingress::IngressConfig::new("node-a");
    config.node_ip = Some("192.0.2.7".parse().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(skiff_ingress::serve(
        client.clone(),
        config,
        http,
        Some(https),
        async {
            let _ = stop_rx.await;
        },
    ));

    // Host routing, with the forwarding headers and the original Host.
    eventually("a.test", || {
        expect(
            http_addr,
            "a.test",
            "/x",
            StatusCode::OK,
            "a GET path=/x host=a.test xff=127.0.0.1 xfh=a.test xfp=http body=",
        )
    })
    .await;
    // A request body reaches the backend; spoofed forwarding headers do not.
    let tcp = TcpStream::connect(http_addr).await.unwrap();
    let post = Request::post("/form")
        .header("host", "a.test")
        .header("x-forwarded-for", "6.6.6.6")
        .body("hello".to_string())
        .unwrap();
    let (status, body) = send_over(tcp, post).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        "a POST path=/form host=a.test xff=127.0.0.1 xfh=a.test xfp=http body=hello"
    );
    eventually("b.test/path", || {
        expect(
            http_addr,
            "b.test:80",
            "/path/y",
            StatusCode::OK,
            "b GET path=/path/y",
        )
    })
    .await;
    // Unknown host, unmatched path, and another class's host: no rule, no default backend.
    for (host, path) in [("unknown.test", "/"), ("b.test", "/other"), ("c.test", "/")] {
        let (status, _) = get(http_addr, host, path).await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{host}{path}");
    }

    // HTTPS: the certificate for SNI b.test comes from the Secret (only its CA is trusted).
    let (status, body) = get_tls(https_addr, &ca, "b.test", "/path", false)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("b GET path=/path host=b.test"), "{body}");
    assert!(body.ends_with("xfp=https body="), "{body}");
    // HTTP/2 clients are served too (ALPN), still forwarded to the backend over HTTP/1.1.
    let (status, body) = get_tls(https_addr, &ca, "b.test", "/path/h2", true)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        "b GET path=/path/h2 host=b.test xff=127.0.0.1 xfh=b.test xfp=https body="
    );
    // Any other name gets the self-signed default certificate, which that client rejects.
    let err = get_tls(https_addr, &ca, "a.test", "/", false)
        .await
        .unwrap_err();
    assert!(err.starts_with("tls:"), "{err}");

    // Served Ingresses carry the node's address; others are left alone.
    eventually("status", || async {
        let ips = |ing: Ingress| -> Vec<String> {
            ing.status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.ip)
                .collect()
        };
        let a = ips(ingresses
            .get_status("ing-a")
            .await
            .map_err(|e| e.to_string())?);
        let b = ips(ingresses
            .get_status("ing-b")
            .await
            .map_err(|e| e.to_string())?);
        if a == ["192.0.2.7"] && b == ["192.0.2.7"] {
            Ok(())
        } else {
            Err(format!("{a:?} {b:?}"))
        }
    })
    .await;
    let other = ingresses.get_status("ing-other").await.unwrap();
    assert!(other
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .is_none());

    // A new Ingress is followed; a backend without endpoints answers 503.
    ingresses
        .create(
            &pp,
            &obj(json!({
                "metadata": { "name": "ing-new" },
                "spec": { "ingressClassName": "skiff", "rules": [
                    rule("new.test", "/", "svc-a", json!({ "number": 80 })),
                    rule("empty.test", "/", "svc-empty", json!({ "number": 80 })),
                ] },
            })),
        )
        .await
        .unwrap();
    eventually("new.test", || {
        expect(http_addr, "new.test", "/", StatusCode::OK, "a GET path=/")
    })
    .await;
    expect(
        http_addr,
        "empty.test",
        "/",
        StatusCode::SERVICE_UNAVAILABLE,
        "",
    )
    .await
    .unwrap();

    // The endpoint goes not-ready: 503; then it points at a closed port: 502.
    slices
        .patch(
            "svc-a-1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "endpoints": [{ "addresses": ["127.0.0.1"],
                                                  "conditions": { "ready": false } }] })),
        )
        .await
        .unwrap();
    eventually("a.test without endpoints", || {
        expect(
            http_addr,
            "a.test",
            "/",
            StatusCode::SERVICE_UNAVAILABLE,
            "",
        )
    })
    .await;
    slices
        .delete("svc-a-1", &DeleteParams::default())
        .await
        .unwrap();
    slices
        .create(&pp, &slice("svc-a-2", "svc-a", "http", closed_port().await))
        .await
        .unwrap();
    eventually("a.test refused", || {
        expect(http_addr, "a.test", "/", StatusCode::BAD_GATEWAY, "")
    })
    .await;
    // With a live endpoint beside the dead one, every request is answered: the dead one is
    // skipped for the next.
    slices
        .create(&pp, &slice("svc-a-3", "svc-a", "http", a_addr.port()))
        .await
        .unwrap();
    eventually("a.test live again", || {
        expect(http_addr, "a.test", "/", StatusCode::OK, "a GET path=/")
    })
    .await;
    for _ in 0..4 {
        expect(http_addr, "a.test", "/", StatusCode::OK, "a GET path=/")
            .await
            .unwrap();
    }

    // Upgraded connections are spliced through to the backend.
    let ws_addr = upgrade_backend().await;
    services
        .create(
            &pp,
            &obj(json!({
                "metadata": { "name": "svc-ws" },
                "spec": { "clusterIP": "10.43.0.64",
                          "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] },
            })),
        )
        .await
        .unwrap();
    slices
        .create(&pp, &slice("svc-ws-1", "svc-ws", "http", ws_addr.port()))
        .await
        .unwrap();
    ingresses
        .create(
            &pp,
            &obj(json!({
                "metadata": { "name": "ing-ws" },
                "spec": { "ingressClassName": "skiff",
                          "rules": [rule("ws.test", "/", "svc-ws", json!({ "number": 80 }))] },
            })),
        )
        .await
        .unwrap();
    eventually("ws.test upgrade", || upgrade_echo(http_addr)).await;

    // Deleting an Ingress removes its routes.
    ingresses
        .delete("ing-b", &DeleteParams::default())
        .await
        .unwrap();
    eventually("b.test removed", || {
        expect(http_addr, "b.test", "/path", StatusCode::NOT_FOUND, "")
    })
    .await;

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), controller)
        .await
        .expect("controller stops on shutdown")
        .unwrap()
        .unwrap();
}
