//! The controller: reflectors feed the routing and certificate tables, listeners hand each
//! connection to the proxy, and served Ingresses get this node's address as their status.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::proxy::Proxy;
use crate::route::{served, RoutingTable};
use crate::tls::{default_certificate, CertResolver, CertTable};

/// How long the controller waits after a change for more changes before rebuilding.
const SETTLE: Duration = Duration::from_millis(20);
/// How long before a failed status write is retried.
const RETRY: Duration = Duration::from_secs(1);
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of [`run`].
#[derive(Clone, Debug)]
pub struct IngressConfig {
    /// Where plain HTTP is served.
    pub http_listen: SocketAddr,
    /// Where HTTPS is served, if at all.
    pub https_listen: Option<SocketAddr>,
    /// This node's name, for logs.
    pub node_name: String,
    /// The address written to served Ingresses' `status.loadBalancer.ingress`; no status is
    /// written when unset.
    pub node_ip: Option<IpAddr>,
}

impl IngressConfig {
    /// Ports 80 and 443 on every address, no status address.
    pub fn new(node_name: impl Into<String>) -> Self {
        IngressConfig {
            http_listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            https_listen: Some(SocketAddr::from(([0, 0, 0, 0], 443))),
            node_name: node_name.into(),
            node_ip: None,
        }
    }
}

/// Binds the configured listeners and runs the controller until `shutdown` completes.
pub async fn run(
    client: kube::Client,
    config: IngressConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let http = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("binding {}", config.http_listen))?;
    let https = match config.https_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?,
        ),
        None => None,
    };
    serve(client, config, http, https, shutdown).await
}

/// Runs the controller on already bound listeners (the `*_listen` fields are ignored) until
/// `shutdown` completes; open connections are dropped then.
pub async fn serve(
    client: kube::Client,
    config: IngressConfig,
    http: TcpListener,
    https: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let proxy = Proxy::new();
    let certs = Arc::new(CertResolver::new(default_certificate()?));
    let acceptor = https.is_some().then(|| {
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_no_client_auth().with_cert_resolver(certs.clone()));
        if let Ok(t) = &mut tls {
            t.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        tls.map(|t| TlsAcceptor::from(Arc::new(t)))
    });
    let acceptor = acceptor.transpose().context("tls configuration")?;
    let http_port = http.local_addr()?.port();
    let https_port = https
        .as_ref()
        .map(|l| l.local_addr().map(|a| a.port()))
        .transpose()?
        .unwrap_or(0);
    tracing::info!(
        node = %config.node_name,
        http = %http.local_addr()?,
        https = ?https.as_ref().and_then(|l| l.local_addr().ok()),
        "ingress controller serving"
    );

    let mut cache = tokio::spawn(watch(client, config, proxy.clone(), certs));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accept_https = async {
            match &https {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => break,
            r = &mut cache => {
                conns.abort_all();
                return match r {
                    Ok(r) => r,
                    Err(e) => Err(e.into()),
                };
            }
            a = http.accept() => match a {
                Ok((stream, remote)) => {
                    let proxy = proxy.clone();
                    conns.spawn(serve_connection(stream, proxy, remote, http_port, false));
                }
                Err(e) => tracing::warn!(error = %e, "accepting http connection"),
            },
            a = accept_https => match (a, &acceptor) {
                (Ok((stream, remote)), Some(acceptor)) => {
                    let proxy = proxy.clone();
                    let acceptor = acceptor.clone();
                    conns.spawn(async move {
                        match acceptor.accept(stream).await {
                            Ok(tls) => serve_connection(tls, proxy, remote, https_port, true).await,
                            Err(e) => tracing::debug!(%remote, error = %e, "tls handshake failed"),
                        }
                    });
                }
                (Err(e), _) => tracing::warn!(error = %e, "accepting https connection"),
                (Ok(_), None) => {}
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    cache.abort();
    conns.abort_all();
    Ok(())
}

async fn serve_connection<S>(io: S, proxy: Proxy, remote: SocketAddr, port: u16, https: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, remote, port, https).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = conn.await {
        tracing::debug!(%remote, error = %e, "ingress connection ended");
    }
}

type Changes = std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>;

fn reflect<K>(api: Api<K>, strip: fn(&mut K)) -> (Store<K>, Changes)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .map_ok(move |ev| ev.modify(strip));
    let stream = reflector::reflector(writer, events)
        .map(|ev| {
            if let Err(e) = ev {
                tracing::warn!(error = %e, "ingress watch error");
            }
        })
        .boxed();
    (reader, stream)
}

/// Whether a reflector has finished its initial list, so a rebuild sees the whole cluster.
fn ready<K: kube::Resource<DynamicType = ()> + Clone + 'static>(store: &Store<K>) -> bool {
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// Keeps an object as it is.
fn keep<K>(_: &mut K) {}

fn snapshot<K: kube::Resource<DynamicType = ()> + Clone + 'static>(store: &Store<K>) -> Vec<K> {
    store.state().iter().map(|o| (**o).clone()).collect()
}

/// Keeps the proxy's routing table and the certificate table equal to the cluster, and writes
/// the status of served Ingresses.
async fn watch(
    client: kube::Client,
    config: IngressConfig,
    proxy: Proxy,
    certs: Arc<CertResolver>,
) -> Result<()> {
    let (ingresses, s1) = reflect(Api::<Ingress>::all(client.clone()), keep);
    let (classes, s2) = reflect(Api::<IngressClass>::all(client.clone()), keep);
    let (services, s3) = reflect(Api::<Service>::all(client.clone()), keep);
    let (slices, s4) = reflect(Api::<EndpointSlice>::all(client.clone()), keep);
    // Only certificate-bearing Secrets matter; the rest are kept as names alone.
    let (secrets, s5) = reflect(Api::<Secret>::all(client.clone()), |s: &mut Secret| {
        if !s
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key("tls.crt") && d.contains_key("tls.key"))
        {
            s.data = None;
            s.string_data = None;
        }
    });
    let mut streams = vec![s1, s2, s3, s4, s5];
    let nodes = config.node_ip.map(|_| {
        let (nodes, s) = reflect(Api::<Node>::all(client.clone()), keep);
        streams.push(s);
        nodes
    });
    let mut changes = futures::stream::select_all(streams);

    let mut dirty = true;
    let mut status_dirty = false;
    loop {
        let all_ready = ready(&ingresses)
            && ready(&classes)
            && ready(&services)
            && ready(&slices)
            && ready(&secrets)
            && nodes.as_ref().is_none_or(ready);
        if dirty && all_ready {
            let ings = snapshot(&ingresses);
            let cls = snapshot(&classes);
            proxy.set_table(RoutingTable::build(
                &ings,
                &cls,
                &snapshot(&services),
                &snapshot(&slices),
            ));
            let ours = served(&ings, &cls);
            certs.set(CertTable::build(&ours, &snapshot(&secrets)));
            dirty = false;
            status_dirty = true;
        }
        if status_dirty && all_ready {
            match (&config.node_ip, &nodes) {
                (Some(ip), Some(nodes)) => {
                    let ings = snapshot(&ingresses);
                    let ours = served(&ings, &snapshot(&classes));
                    match write_status(&client, &ours, *ip, &snapshot(nodes)).await {
                        Ok(()) => status_dirty = false,
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "ingress status write failed")
                        }
                    }
                }
                _ => status_dirty = false,
            }
        }
        let retry = async {
            if status_dirty {
                tokio::time::sleep(RETRY).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = retry => {}
            ev = changes.next() => {
                if ev.is_none() {
                    bail!("watch streams ended");
                }
                dirty = true;
                // Coalesce a burst of events into one rebuild.
                let settle = tokio::time::sleep(SETTLE);
                tokio::pin!(settle);
                loop {
                    tokio::select! {
                        _ = &mut settle => break,
                        more = changes.next() => if more.is_none() { bail!("watch streams ended") },
                    }
                }
            }
        }
    }
}

/// The status addresses of an Ingress served by the node at `own`: `own` plus the addresses
/// other nodes' controllers wrote that still belong to a Node, so that controllers on several
/// nodes converge on the union instead of overwriting each other (k3s publishes every node).
pub fn status_addresses(current: &[String], own: IpAddr, nodes: &[Node]) -> Vec<String> {
    let known: std::collections::HashSet<IpAddr> = nodes
        .iter()
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .filter_map(|a| a.address.parse().ok())
        .collect();
    let mut ips: Vec<IpAddr> = current
        .iter()
        .filter_map(|c| c.parse().ok())
        .filter(|ip| known.contains(ip))
        .chain([own])
        .collect();
    ips.sort();
    ips.dedup();
    ips.iter().map(IpAddr::to_string).collect()
}

async fn write_status(
    client: &kube::Client,
    ingresses: &[&Ingress],
    own: IpAddr,
    nodes: &[Node],
) -> Result<()> {
    for ing in ingresses {
        let (Some(ns), Some(name)) = (&ing.metadata.namespace, &ing.metadata.name) else {
            continue;
        };
        let current: Vec<String> = ing
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|i| i.iter().filter_map(|i| i.ip.clone()).collect())
            .unwrap_or_default();
        let want = status_addresses(&current, own, nodes);
        if current == want {
            continue;
        }
        let ingress: Vec<serde_json::Value> = want
            .iter()
            .map(|ip| serde_json::json!({ "ip": ip }))
            .collect();
        let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": ingress } } });
        Api::<Ingress>::namespaced(client.clone(), ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("writing status of ingress {ns}/{name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_keeps_other_live_nodes() {
        let node: Node = serde_json::from_value(json!({
            "metadata": { "name": "b" },
            "status": { "addresses": [{ "type": "InternalIP", "address": "10.0.0.2" }] },
        }))
        .unwrap();
        let current = ["10.0.0.9".to_string(), "10.0.0.2".to_string()];
        let own: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            status_addresses(&current, own, &[node]),
            ["10.0.0.1", "10.0.0.2"]
        );
        assert_eq!(status_addresses(&[], own, &[]), ["10.0.0.1"]);
    }
}
