//! Serving: the listener (TLS with optional client certificates, or plain HTTP for in-process
//! tests), authentication, and routing of every path.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use skiff_pki::UserInfo;
use tokio::net::TcpListener;

use crate::error::{ApiError, ApiResult};
use crate::http_util::{bytes_response, error_response, json_response, text_response, Resp};
use crate::reqinfo::{self, Target};
use crate::rest::MAX_BODY;
use crate::{discovery, negotiate, ApiServer, Ctx};

/// The protobuf `/openapi/v2` document, copied out of its cache once (about 1 MB) rather than
/// per request.
fn v2_protobuf_bytes() -> Bytes {
    static DOC: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    DOC.get_or_init(|| Bytes::from(skiff_openapi::v2_protobuf().to_vec()))
        .clone()
}

/// A request body as the server handles it: a network connection's, or an in-process client's.
/// (A concrete error type: with a boxed one, rustc cannot prove the serving futures `Send`.)
pub type RequestBody = BoxBody<Bytes, std::io::Error>;

fn network_request(req: http::Request<hyper::body::Incoming>) -> http::Request<RequestBody> {
    req.map(|b| b.map_err(std::io::Error::other).boxed())
}

/// The Kubernetes version whose API is served.
pub const KUBE_VERSION: (&str, &str) = ("1", "32");

/// Serves `server` on `listener` until `shutdown` resolves. With `tls`, client certificates
/// signed by the cluster CA authenticate their subject.
pub async fn serve(
    server: ApiServer,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            _ = &mut shutdown => return,
            res = listener.accept() => match res {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let server = server.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Clients multiplex their watches and requests over one HTTP/2 connection; allow
            // as many streams as upstream's `--http2-max-streams-per-connection` default.
            builder.http2().max_concurrent_streams(1000);
            match acceptor {
                Some(acc) => {
                    let tls = match acc.accept(tcp).await {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    let user = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| skiff_pki::identity_from_cert(c.as_ref()));
                    let svc = service_fn(move |req| {
                        let server = server.clone();
                        let user = user.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                server.handle(network_request(req), user).await,
                            )
                        }
                    });
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                        .await;
                }
                None => {
                    let svc = service_fn(move |req| {
                        let server = server.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                server.handle(network_request(req), None).await,
                            )
                        }
                    });
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                        .await;
                }
            }
        });
    }
}

/// Decodes a query string.
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/version" | "/version/"
    ) || path == crate::join::CACERTS_PATH
        || path == crate::join::NODE_CERT_PATH
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// The `Authorization: Bearer` token of a request.
fn bearer_token<B>(req: &http::Request<B>) -> Option<String> {
    req.headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
}

fn version_doc() -> serde_json::Value {
    json!({
        "major": KUBE_VERSION.0,
        "minor": KUBE_VERSION.1,
        "gitVersion": format!("v{}.{}.0+skiff-{}", KUBE_VERSION.0, KUBE_VERSION.1, env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a (rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else if std::env::consts::ARCH == "aarch64" { "arm64" } else { std::env::consts::ARCH }),
    })
}

impl ApiServer {
    fn authenticate(
        &self,
        req: &http::Request<RequestBody>,
        peer: Option<UserInfo>,
    ) -> Option<UserInfo> {
        if let Some(u) = peer {
            return Some(u);
        }
        if let Some(auth) = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            if let Some(token) = auth.strip_prefix("Bearer ").map(str::trim) {
                if let Some(t) = &self.opts.tokens {
                    if let Some(u) = t.authenticate(token) {
                        return Some(u);
                    }
                }
                return None;
            }
        }
        if self.opts.insecure_anonymous_admin {
            return Some(UserInfo::admin());
        }
        None
    }

    /// Handles one request.
    pub async fn handle(&self, req: http::Request<RequestBody>, peer: Option<UserInfo>) -> Resp {
        let started = Instant::now();
        let path = req.uri().path().to_string();
        let mut user = self.authenticate(&req, peer);
        if user.is_none() {
            if let Some(token) = bearer_token(&req) {
                user = self.authenticate_service_account(&token).await;
            }
        }
        let (resp, verb, resource) = match user {
            None if !is_public(&path) => {
                (error_response(&ApiError::unauthorized()), "", String::new())
            }
            user => {
                let user = user.unwrap_or(UserInfo {
                    name: "system:anonymous".into(),
                    uid: String::new(),
                    groups: vec!["system:unauthenticated".into()],
                });
                match self.route(req, &user).await {
                    Ok((r, v, res)) => (r, v, res),
                    Err((e, v, res)) => (error_response(&e), v, res),
                }
            }
        };
        let took = started.elapsed();
        let status = resp.status().as_u16();
        if !resource.is_empty() {
            self.metrics.request(verb, &resource, status, took);
        }
        tracing::debug!(path, status, ms = took.as_secs_f64() * 1000.0, "request");
        resp
    }

    #[allow(clippy::result_large_err)]
    async fn route(
        &self,
        req: http::Request<RequestBody>,
        user: &UserInfo,
    ) -> Result<(Resp, &'static str, String), (ApiError, &'static str, String)> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let query = parse_query(parts.uri.query());
        let header = |h: http::header::HeaderName| {
            parts
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let accept = header(http::header::ACCEPT);
        let content_type = header(http::header::CONTENT_TYPE);
        let user_agent = header(http::header::USER_AGENT).unwrap_or_default();
        let nonres = |r: ApiResult<Resp>| {
            r.map(|r| (r, "get", String::new()))
                .map_err(|e| (e, "get", String::new()))
        };
        match path.as_str() {
            "/healthz" | "/livez" | "/readyz" => return nonres(Ok(text_response(200, "ok"))),
            "/version" | "/version/" => return nonres(Ok(json_response(200, &version_doc()))),
            "/metrics" => {
                return nonres(Ok(bytes_response(
                    200,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )));
            }
            "/openapi/v2" => return nonres(self.openapi_v2(accept.as_deref())),
            "/openapi/v3" | "/openapi/v3/" => {
                return nonres(Ok(json_response(200, &skiff_openapi::v3_index())));
            }
            _ => {}
        }
        if path.starts_with("/healthz/")
            || path.starts_with("/livez/")
            || path.starts_with("/readyz/")
        {
            return nonres(Ok(text_response(200, "ok")));
        }
        if let Some(r) = self.openid_endpoint(&path) {
            return nonres(Ok(r));
        }
        if let Some(gv) = path.strip_prefix("/openapi/v3/") {
            return nonres(self.openapi_v3(gv, &query));
        }
        if path == crate::join::CACERTS_PATH || path == crate::join::NODE_CERT_PATH {
            let auth = header(http::header::AUTHORIZATION);
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if let Some(r) = self.join_endpoint(&parts.method, &path, auth.as_deref(), &body) {
                return nonres(r);
            }
            return nonres(Err(ApiError::path_not_found()));
        }
        if let Some(target) = crate::proxy::match_path(&path) {
            let (verb, resource) = target.metric_labels(&parts.method);
            let req = http::Request::from_parts(parts, body);
            return match self.proxy(target, req).await {
                Ok(r) => Ok((r, verb, resource)),
                Err(e) => Err((e, verb, resource)),
            };
        }
        if !(path == "/api"
            || path.starts_with("/api/")
            || path == "/apis"
            || path.starts_with("/apis/"))
        {
            return nonres(Err(ApiError::path_not_found()));
        }
        let watch = query.get("watch").is_some_and(|v| v == "true" || v == "1");
        let target =
            reqinfo::resolve(&parts.method, &path, watch).map_err(|e| (e, "get", String::new()))?;
        let rr = match target {
            Target::ApiVersions | Target::ApiGroups => {
                let core = matches!(target, Target::ApiVersions);
                if negotiate::wants_aggregated_discovery(accept.as_deref()) {
                    let doc = discovery::aggregated(core);
                    let mut resp = bytes_response(
                        200,
                        discovery::AGGREGATED_CONTENT_TYPE,
                        serde_json::to_vec(&doc).expect("serializes"),
                    );
                    resp.headers_mut()
                        .insert("Vary", http::HeaderValue::from_static("Accept"));
                    return nonres(Ok(resp));
                }
                let doc = if core {
                    discovery::api_versions(&self.opts.server_address)
                } else {
                    discovery::api_group_list()
                };
                return nonres(Ok(json_response(200, &doc)));
            }
            Target::ApiGroup(g) => {
                return nonres(
                    discovery::api_group(&g)
                        .map(|d| json_response(200, &d))
                        .ok_or_else(ApiError::path_not_found),
                );
            }
            Target::ResourceList(g, v) => {
                return nonres(
                    discovery::api_resource_list(&g, &v)
                        .map(|d| json_response(200, &d))
                        .ok_or_else(ApiError::path_not_found),
                );
            }
            Target::Resource(rr) => rr,
        };
        let verb = rr.verb.as_str();
        let resource = match &rr.subresource {
            Some(s) => format!("{}/{}", rr.resource.group_resource(), s),
            None => rr.resource.group_resource(),
        };
        let body: Bytes = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let err = if e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    ApiError::too_large(MAX_BODY)
                } else {
                    ApiError::bad_request(format!("error reading request body: {e}"))
                };
                return Err((err, verb, resource));
            }
        };
        let ctx = Ctx {
            query: &query,
            accept: accept.as_deref(),
            content_type: content_type.as_deref(),
            user_agent: &user_agent,
            user,
        };
        match self.resource(&rr, &ctx, &body).await {
            Ok(r) => Ok((r, verb, resource)),
            Err(e) => Err((e, verb, resource)),
        }
    }

    /// `/openapi/v2`: JSON when the client takes it, else gnostic protobuf (what client-go asks
    /// for), else 406 — upstream's order.
    fn openapi_v2(&self, accept: Option<&str>) -> ApiResult<Resp> {
        let accept = accept.unwrap_or("application/json");
        let media: Vec<&str> = accept
            .split(',')
            .map(|a| a.split(';').next().unwrap_or("").trim())
            .collect();
        let mut resp = if media
            .iter()
            .any(|m| matches!(*m, "application/json" | "*/*" | "application/*" | ""))
        {
            let doc = skiff_openapi::v2();
            bytes_response(200, "application/json", doc.json.clone())
        } else if media.iter().any(|m| {
            *m == skiff_openapi::V2_PROTOBUF_MEDIA_TYPE
                || *m == skiff_openapi::V2_PROTOBUF_CONTENT_TYPE
        }) {
            bytes_response(
                200,
                skiff_openapi::V2_PROTOBUF_CONTENT_TYPE,
                v2_protobuf_bytes(),
            )
        } else {
            return Err(ApiError::not_acceptable(accept));
        };
        resp.headers_mut()
            .insert("Vary", http::HeaderValue::from_static("Accept"));
        Ok(resp)
    }

    fn openapi_v3(&self, gv: &str, query: &HashMap<String, String>) -> ApiResult<Resp> {
        let (group, version) = if let Some(v) = gv.strip_prefix("api/") {
            ("", v)
        } else if let Some(rest) = gv.strip_prefix("apis/") {
            rest.split_once('/').ok_or_else(ApiError::path_not_found)?
        } else {
            return Err(ApiError::path_not_found());
        };
        let doc =
            skiff_openapi::v3_group_version(group, version).ok_or_else(ApiError::path_not_found)?;
        let mut resp = bytes_response(200, "application/json", doc.json.clone());
        let h = resp.headers_mut();
        if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", doc.hash)) {
            h.insert(http::header::ETAG, v);
        }
        let cache = if query.get("hash").is_some_and(|q| *q == doc.hash) {
            "public, immutable"
        } else {
            "no-cache, private"
        };
        h.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static(cache),
        );
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&limit=500&watch",
        ));
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["limit"], "500");
        assert_eq!(q["watch"], "");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
