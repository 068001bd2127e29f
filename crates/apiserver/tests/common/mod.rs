//! An in-process API server on the memory store, for API tests driven by the `kube` client.

use std::sync::Arc;
use std::time::Duration;

use kube::{Client, Config};
use skiff_apiserver::{ApiServer, Config as ServerConfig};
use skiff_store::MemoryStore;

/// Starts a server on a loopback port (plain HTTP, anonymous admin) and returns a client for it.
pub async fn start_with_event_ttl(event_ttl: Duration) -> Client {
    let server = ApiServer::new(ServerConfig {
        store: Arc::new(MemoryStore::new()),
        advertise_address: "127.0.0.1".parse().unwrap(),
        port: 6443,
        tokens: None,
        event_ttl,
        insecure_anonymous_admin: true,
        default_toleration_seconds: (300, 300),
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(skiff_apiserver::serve(
        server,
        listener,
        None,
        std::future::pending(),
    ));
    Client::try_from(Config::new(format!("http://{addr}").parse().unwrap())).unwrap()
}

/// [`start_with_event_ttl`] with upstream's one-hour event TTL.
#[allow(dead_code)]
pub async fn start() -> Client {
    start_with_event_ttl(Duration::from_secs(3600)).await
}
