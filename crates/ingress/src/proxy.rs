//! The reverse proxy: one request in (HTTP/1.1, or HTTP/2 where the client negotiates it),
//! routed by the current [`RoutingTable`] and forwarded over HTTP/1.1 to a ready endpoint with
//! the `X-Forwarded-*` headers ingress-nginx sets. Protocol upgrades (WebSocket) are spliced
//! through after the backend's `101`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::route::RoutingTable;

/// How long connecting to an endpoint may take before the request fails with 504.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many endpoints one request may try, as ingress-nginx's `proxy-next-upstream-tries`.
const MAX_TRIES: usize = 3;

/// The body of a proxied or generated response.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Shared state of every connection: the current table and the backend connection pool.
#[derive(Clone)]
pub struct Proxy {
    table: Arc<RwLock<Arc<RoutingTable>>>,
    client: Client<HttpConnector, Body>,
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}

impl Proxy {
    /// A proxy with an empty table (every request gets 404).
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Proxy {
            table: Arc::new(RwLock::new(Arc::new(RoutingTable::default()))),
            client,
        }
    }

    /// Replaces the routing table; requests already routed keep the old one.
    pub fn set_table(&self, table: RoutingTable) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    fn table(&self) -> Arc<RoutingTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Serves one request from `remote`, which came in over TLS when `https`.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        remote: SocketAddr,
        local_port: u16,
        https: bool,
    ) -> Response<Body> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let table = self.table();
        let Some(backend) = table.route(&host, req.uri().path()) else {
            return status(StatusCode::NOT_FOUND, "default backend - 404");
        };
        let Some(first) = backend.pick() else {
            tracing::debug!(ns = %backend.namespace, service = %backend.service, "no ready endpoints");
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Temporarily Unavailable",
            );
        };
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();

        let upgrade = upgrade_protocol(req.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        if let Some(proto) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, proto.clone());
        }
        if !headers.contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(&host) {
                headers.insert(header::HOST, v);
            }
        }
        let set = |h: &mut HeaderMap, name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        // Like ingress-nginx without `use-forwarded-headers`: the client's own X-Forwarded-*
        // headers are not trusted and are replaced.
        let client_ip = remote.ip().to_canonical().to_string();
        set(&mut headers, "x-forwarded-for", &client_ip);
        set(&mut headers, "x-real-ip", &client_ip);
        set(&mut headers, "x-forwarded-host", &host);
        set(&mut headers, "x-forwarded-port", &local_port.to_string());
        set(
            &mut headers,
            "x-forwarded-proto",
            if https { "https" } else { "http" },
        );

        // Like ingress-nginx's `proxy_next_upstream error timeout`, an endpoint that cannot be
        // reached is skipped for the next one; only a request without a body can be resent.
        let tries = if body.is_end_stream() {
            backend.endpoints.len().min(MAX_TRIES)
        } else {
            1
        };
        let mut body = Some(body.boxed());
        let mut endpoint = first;
        let mut attempt = 1;
        let mut resp = loop {
            let Ok(uri) = format!("http://{endpoint}{path}").parse::<Uri>() else {
                return status(StatusCode::BAD_REQUEST, "400 Bad Request");
            };
            let mut out = Request::new(body.take().unwrap_or_else(empty));
            *out.method_mut() = parts.method.clone();
            *out.uri_mut() = uri;
            *out.headers_mut() = headers.clone();
            match self.client.request(out).await {
                Ok(r) => break r,
                Err(e) => {
                    tracing::debug!(%endpoint, error = %format!("{e:?}"), "backend request failed");
                    if e.is_connect() && attempt < tries {
                        attempt += 1;
                        endpoint = backend.pick().unwrap_or(first);
                        continue;
                    }
                    return if is_timeout(&e) {
                        status(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Time-out")
                    } else {
                        status(StatusCode::BAD_GATEWAY, "502 Bad Gateway")
                    };
                }
            }
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let backend_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    let (Ok(client), Ok(backend)) = tokio::join!(client_upgrade, backend_upgrade)
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(client),
                        &mut TokioIo::new(backend),
                    )
                    .await;
                });
                let (parts, _) = resp.into_parts();
                return Response::from_parts(parts, empty());
            }
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Response::from_parts(parts, body.boxed())
    }
}

/// The `Upgrade` protocol of a request that asks for one (`Connection: upgrade`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Removes the hop-by-hop headers of RFC 9110 section 7.6.1, including those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

fn is_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut;
        }
        source = s.source();
    }
    false
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// A generated response with a short text body.
fn status(code: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{text}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn upgrade_requests_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(&h), None);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            upgrade_protocol(&h),
            Some(HeaderValue::from_static("websocket"))
        );
    }
}
