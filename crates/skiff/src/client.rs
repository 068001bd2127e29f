//! The API client every skiff component uses.

use anyhow::Result;

/// A client of the API server that multiplexes every request and watch over one HTTP/2
/// connection when the server offers it (as client-go does), instead of kube's default of one
/// HTTP/1.1 connection per concurrent request: every component of skiff uses it. An agent with dozens of pods and a dozen watches, or a scheduler with a hundred binds in flight,
/// otherwise holds as many TLS connections and their buffers.
pub fn api_client(config: kube::Config) -> Result<kube::Client> {
    use kube::client::ConfigExt;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    // HTTP/2 writes a request's HEADERS and DATA frames separately: with Nagle's algorithm the
    // second waits for the server's delayed ACK (40 ms per request).
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            // Pings find a dead connection (server gone, network cut) that would otherwise
            // hang every request multiplexed on it.
            .http2_keep_alive_interval(std::time::Duration::from_secs(30))
            .http2_keep_alive_timeout(std::time::Duration::from_secs(10))
            // Flow-control windows as Go's HTTP/2 client (client-go): a huge connection window,
            // so that a watch whose events are not read yet never holds up the responses of
            // other requests on the connection, and 4 MiB per stream.
            .http2_initial_connection_window_size(1 << 30)
            .http2_initial_stream_window_size(4 << 20)
            .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .map_err(tower::BoxError::from)
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// A client of the API server in this same process: each request goes straight to
/// `server`'s handler as `user`, with no TLS, HTTP/2 framing or socket between them. The
/// components `skiff server` runs beside its API server (scheduler, controller manager) use it
/// behind the same `kube::Client` interface as a remote client: every request still passes
/// authentication, routing, admission and the watch cache as it would over the network.
pub fn local_client(
    server: skiff_apiserver::ApiServer,
    user: skiff_apiserver::UserInfo,
) -> kube::Client {
    use http_body_util::{BodyExt, Full};
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (server, user) = (server.clone(), user.clone());
        async move {
            let (parts, body) = req.into_parts();
            // Request bodies are whole objects, buffered by the network path too.
            let bytes = body
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            let body = Full::new(bytes).map_err(|never| match never {}).boxed();
            Ok::<_, std::io::Error>(
                server
                    .handle(http::Request::from_parts(parts, body), Some(user))
                    .await,
            )
        }
    });
    kube::Client::new(service, "default")
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams, WatchEvent, WatchParams};

    use super::api_client;

    /// A real API server over TLS on loopback and an admin client of it built by `api_client`.
    async fn server_and_client(dir: &std::path::Path) -> kube::Client {
        let pki = skiff_pki::ensure(
            &dir.join("tls"),
            &skiff_pki::PkiOptions {
                host_name: String::new(),
                host_addresses: vec![IpAddr::from([127, 0, 0, 1])],
                extra_sans: Vec::new(),
            },
        )
        .expect("pki");
        let server = skiff_apiserver::memory_server_for_tests(false).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tls = skiff_pki::server_tls_config(&pki).expect("server TLS");
        tokio::spawn(skiff_apiserver::serve(
            server,
            listener,
            Some(tls),
            std::future::pending(),
        ));
        let kubeconfig = dir.join("kubeconfig");
        pki.write_admin_kubeconfig(&kubeconfig, &format!("https://127.0.0.1:{port}"))
            .expect("kubeconfig");
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("read kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        api_client(cfg).expect("client")
    }

    #[tokio::test]
    async fn requests_share_one_http2_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = server_and_client(dir.path()).await;
        let req = http::Request::get("/version")
            .body(kube::client::Body::empty())
            .expect("request");
        let resp = client.send(req).await.expect("GET /version");
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert!(resp.status().is_success());
    }

    /// A watch whose events nobody reads yet must not hold up other requests on the shared
    /// connection (connection-level flow control would, with small windows).
    #[tokio::test]
    async fn an_unread_watch_does_not_block_other_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = server_and_client(dir.path()).await;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let mut watch = api
            .watch(&WatchParams::default().timeout(120), "0")
            .await
            .expect("watch")
            .boxed();
        // About 3 MiB of events, far beyond HTTP/2's default 64 KiB windows.
        let data = "x".repeat(10_000);
        let total = 300;
        let creates = async {
            for i in 0..total {
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("cm-{i}")},
                    "data": {"payload": data},
                }))
                .expect("configmap");
                api.create(&PostParams::default(), &cm)
                    .await
                    .expect("create");
            }
        };
        tokio::time::timeout(Duration::from_secs(60), creates)
            .await
            .expect("creates finish while the watch is unread");
        let mut added = 0;
        let read = async {
            while added < total {
                match watch.next().await {
                    Some(Ok(WatchEvent::Added(_))) => added += 1,
                    Some(Ok(_)) => {}
                    other => panic!("watch ended early: {other:?}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("every create reaches the watch");
        assert_eq!(added, total);
    }
}

#[cfg(test)]
mod local_tests {
    use std::time::Duration;

    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams, WatchEvent, WatchParams};

    /// The in-process client goes through the same handler as the network: creates, reads,
    /// streamed watches, and upstream's errors as `kube::Error::Api`.
    #[tokio::test]
    async fn an_in_process_client_creates_reads_and_watches() {
        let server = skiff_apiserver::memory_server_for_tests(false).await;
        let api: Api<ConfigMap> = Api::namespaced(
            super::local_client(server, skiff_apiserver::UserInfo::admin()),
            "default",
        );
        let mut watch = api
            .watch(&WatchParams::default().timeout(30), "0")
            .await
            .expect("watch")
            .boxed();
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "local"}, "data": {"k": "v"}
        }))
        .expect("configmap");
        let created = api
            .create(&PostParams::default(), &cm)
            .await
            .expect("create");
        assert!(created.metadata.resource_version.is_some());
        let got = api.get("local").await.expect("get");
        assert_eq!(got.data.unwrap()["k"], "v");
        match api.create(&PostParams::default(), &cm).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"))
            }
            other => panic!("a second create must conflict: {other:?}"),
        }
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("a watch event within the deadline")
            .expect("stream open")
            .expect("event");
        match event {
            WatchEvent::Added(c) => assert_eq!(c.metadata.name.as_deref(), Some("local")),
            other => panic!("expected ADDED, got {other:?}"),
        }
    }
}
