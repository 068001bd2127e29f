//! The Kubernetes API server of skiff: the only component that touches the datastore.
//!
//! Layout:
//! - `server`: the HTTPS listener, TLS and client identity, authentication, request routing;
//! - `reqinfo`: what a path and method address (upstream's `RequestInfo`);
//! - `negotiate`: `Accept` and `Content-Type` handling;
//! - `discovery`: legacy and aggregated discovery documents;
//! - `rest`: the verbs on persisted resources and their subresources;
//! - `watch`: watch streams fed by `cache`, the per-server watch cache;
//! - `meta`, `strategy`: system metadata and per-kind storage rules;
//! - `alloc`: Service ClusterIP and NodePort allocation;
//! - `bootstrap`: the objects every cluster starts with;
//! - `events_ttl`: expiry of core events;
//! - `metrics`: Prometheus metrics;
//! - `proxy`: the subresources node agents serve (logs, exec, attach, port-forward, node proxy);
//! - `join`: the join token and the node certificate endpoint;
//! - `satoken`: bound service-account tokens (TokenRequest, authentication, OIDC discovery);
//! - `error`: `Status` errors.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use skiff_store::Store;

pub mod alloc;
pub mod bootstrap;
pub mod cache;
pub mod discovery;
pub mod error;
pub mod events_ttl;
pub mod http_util;
pub mod join;
pub mod meta;
pub mod metrics;
pub mod negotiate;
pub mod proxy;
pub mod reqinfo;
pub mod rest;
pub mod satoken;
pub mod server;
pub mod strategy;
pub mod watch;

pub use error::ApiError;
pub use server::serve;
pub use skiff_pki::UserInfo;

/// What the API server needs to start.
pub struct Config {
    /// The datastore.
    pub store: Arc<dyn Store>,
    /// The address other components and pods reach the API server at (the `kubernetes`
    /// Service's endpoint).
    pub advertise_address: IpAddr,
    /// The HTTPS port.
    pub port: u16,
    /// Static bearer tokens (`--token-file`).
    pub tokens: Option<skiff_pki::TokenFile>,
    /// How long core events live after their last write (upstream's `--event-ttl`).
    pub event_ttl: std::time::Duration,
    /// Treat unauthenticated requests as cluster admin. Only for in-process tests over plain
    /// HTTP on loopback; never set by the binary.
    pub insecure_anonymous_admin: bool,
    /// Seconds pods tolerate `not-ready` and `unreachable` nodes unless they say otherwise
    /// (upstream's `--default-not-ready-toleration-seconds`, `--default-unreachable-toleration-seconds`).
    pub default_toleration_seconds: (i64, i64),
}

/// Serves an API server on the memory store over plain HTTP on a free loopback port, admitting
/// every request as an admin, until the runtime ends: the shared fixture of other crates'
/// integration tests (never used by the binary).
pub async fn serve_for_tests() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the test API server");
    let addr = listener.local_addr().expect("test API server address");
    serve_for_tests_on(listener).await;
    addr
}

/// As [`serve_for_tests`], on a listener the test bound (a test that must know the address
/// before the server exists).
pub async fn serve_for_tests_on(listener: tokio::net::TcpListener) {
    let server = memory_server_for_tests(true).await;
    tokio::spawn(serve(server, listener, None, std::future::pending()));
}

/// An API server on the memory store with the defaults tests need, not yet serving; with
/// `anonymous_admin`, requests without credentials act as the admin (never used by the binary).
pub async fn memory_server_for_tests(anonymous_admin: bool) -> ApiServer {
    ApiServer::new(Config {
        store: Arc::new(skiff_store::MemoryStore::new()),
        advertise_address: IpAddr::from([127, 0, 0, 1]),
        port: 6443,
        tokens: None,
        event_ttl: std::time::Duration::from_secs(3600),
        insecure_anonymous_admin: anonymous_admin,
        default_toleration_seconds: (300, 300),
    })
    .await
    .expect("start the test API server")
}

/// Options the handlers consult.
pub struct Options {
    /// `host:port` advertised in `/api`.
    pub server_address: String,
    /// Static bearer tokens.
    pub tokens: Option<skiff_pki::TokenFile>,
    /// See [`Config::insecure_anonymous_admin`].
    pub insecure_anonymous_admin: bool,
    /// See [`Config::default_toleration_seconds`].
    pub default_toleration_seconds: (i64, i64),
}

/// A running API server; cheap to clone.
#[derive(Clone)]
pub struct ApiServer {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cache: Arc<cache::WatchCache>,
    pub(crate) alloc: Arc<alloc::Allocator>,
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) opts: Arc<Options>,
    pub(crate) proxy: Arc<proxy::ProxyState>,
    pub(crate) join: Arc<join::JoinState>,
    pub(crate) satoken: Arc<satoken::Issuer>,
}

/// What a handler knows of the request besides path and body.
pub struct Ctx<'a> {
    /// Decoded query parameters.
    pub query: &'a HashMap<String, String>,
    /// `Accept`.
    pub accept: Option<&'a str>,
    /// `Content-Type`.
    pub content_type: Option<&'a str>,
    /// `User-Agent`.
    pub user_agent: &'a str,
    /// The authenticated user.
    pub user: &'a UserInfo,
}

impl ApiServer {
    /// Loads the watch cache and allocation state, and creates the objects every cluster starts
    /// with.
    pub async fn new(config: Config) -> anyhow::Result<ApiServer> {
        let metrics = Arc::new(metrics::Metrics::default());
        let store: Arc<dyn Store> =
            Arc::new(metrics::MeteredStore::new(config.store, metrics.clone()));
        let cache = cache::WatchCache::start(store.clone()).await?;
        let alloc = Arc::new(alloc::Allocator::default());
        let svc = skiff_api::registry::find("", "v1", "services").expect("services are served");
        for obj in cache.list(&svc.key_prefix()).1 {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&obj.bytes) {
                alloc.restore(&obj.key, &v);
            }
        }
        let server_address = match config.advertise_address {
            IpAddr::V6(a) => format!("[{a}]:{}", config.port),
            IpAddr::V4(a) => format!("{a}:{}", config.port),
        };
        let server = ApiServer {
            store,
            cache,
            alloc,
            metrics,
            opts: Arc::new(Options {
                server_address,
                tokens: config.tokens,
                insecure_anonymous_admin: config.insecure_anonymous_admin,
                default_toleration_seconds: config.default_toleration_seconds,
            }),
            proxy: Arc::default(),
            join: Arc::default(),
            satoken: Arc::new(satoken::Issuer::new()?),
        };
        bootstrap::run(&server, config.advertise_address, config.port).await?;
        events_ttl::spawn(
            &server,
            config.event_ttl,
            std::time::Duration::from_secs(60).min(config.event_ttl),
        );
        Ok(server)
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }
}
