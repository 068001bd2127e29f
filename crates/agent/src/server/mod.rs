//! The agent's HTTPS API on port 10250, as upstream's kubelet serves it to the API server:
//! - `GET /containerLogs/{ns}/{pod}/{container}?follow&previous&sinceSeconds&sinceTime&tailLines&timestamps&limitBytes`
//! - `GET|POST /exec/{ns}/{pod}/{container}?command=...&stdin&stdout&stderr&tty`
//! - `GET|POST /attach/{ns}/{pod}/{container}?stdin&stdout&stderr&tty`
//! - `GET|POST /portForward/{ns}/{pod}`
//! - `GET /healthz`
//!
//! Only the API server may call it: TLS requires a client certificate from the cluster CA, and
//! only `kube-apiserver-kubelet-client` (or a member of `system:masters`) is let through.
//! Exec, attach and port-forward ask CRI for a URL on containerd's streaming server and proxy
//! the client's upgraded connection (SPDY/3.1, or WebSocket with the older channel protocols)
//! to it byte for byte. Exec and attach over WebSocket with `v5.channel.k8s.io` or
//! `v4.channel.k8s.io`, which kubectl tries first, are translated to SPDY here instead (as
//! upstream's API server does), since containerd's WebSocket server predates v5; port-forward
//! over WebSocket unwraps the SPDY the client tunnels through it (`wsstream`).
//!
//! `bootstrap` obtains the node's certificates with a join token.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use skiff_pki::UserInfo;
use tokio::net::TcpListener;

use crate::runtime::Runtime;

pub mod bootstrap;
pub mod logs;
mod spdy;
pub mod wsstream;

/// The port of the agent's API (upstream's kubelet port).
pub const AGENT_PORT: u16 = 10250;
/// The API server's user towards agents (upstream's `kube-apiserver-kubelet-client`).
pub const APISERVER_USER: &str = "kube-apiserver-kubelet-client";
/// Members of this group may call the agent too (cluster admins).
pub const ADMIN_GROUP: &str = "system:masters";

type Body = UnsyncBoxBody<Bytes, Infallible>;
type Resp = http::Response<Body>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

fn text(code: u16, msg: impl Into<String>) -> Resp {
    let mut m = msg.into();
    if !m.ends_with('\n') {
        m.push('\n');
    }
    http::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(m))
        .expect("valid response")
}

/// An error answered as plain text, as the kubelet does.
struct HttpError(u16, String);

impl HttpError {
    fn bad(msg: impl Into<String>) -> Self {
        HttpError(400, msg.into())
    }
    fn cri(what: &str, s: tonic::Status) -> Self {
        let code = match s.code() {
            tonic::Code::NotFound => 404,
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => 400,
            _ => 500,
        };
        HttpError(code, format!("{what}: {}", s.message()))
    }
}

/// Whether `user` may call the agent's API.
pub fn authorized(user: &UserInfo) -> bool {
    user.name == APISERVER_USER || user.groups.iter().any(|g| g == ADMIN_GROUP)
}

/// The agent's TLS configuration: its serving certificate, HTTP/1.1 only (the streaming
/// upgrades need it), and client certificates from the cluster CA required.
pub fn tls_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.context("parsing the CA certificate")?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the serving certificate")?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("parsing the serving key")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The agent's API.
#[derive(Clone)]
pub struct AgentApi {
    runtime: Runtime,
    /// Log files are only served from under this directory, when set.
    log_root: Option<PathBuf>,
}

impl AgentApi {
    /// An API answering from the CRI runtime `runtime`. With `log_root`, log paths the runtime
    /// reports outside it are refused.
    pub fn new(runtime: Runtime, log_root: Option<PathBuf>) -> AgentApi {
        AgentApi { runtime, log_root }
    }

    /// Serves on `listener` until `shutdown` resolves. With `tls` (always, outside tests) every
    /// client must present a certificate from the cluster CA and be [`authorized`]; without it
    /// every client is let in.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: impl Future<Output = ()>,
    ) {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::pin!(shutdown);
        loop {
            let tcp = tokio::select! {
                _ = &mut shutdown => return,
                r = listener.accept() => match r {
                    Ok((t, _)) => t,
                    Err(e) => {
                        tracing::warn!(error = %e, "agent API accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let api = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let builder = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(acc) => {
                        let tls = match acc.accept(tcp).await {
                            Ok(t) => t,
                            Err(e) => {
                                tracing::debug!(error = %e, "agent API TLS handshake failed");
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
                            let api = api.clone();
                            let user = user.clone();
                            async move {
                                let resp = match &user {
                                    Some(u) if authorized(u) => api.handle(req).await,
                                    Some(u) => text(
                                        403,
                                        format!(
                                            "Forbidden (user={}, verb={}, path={})",
                                            u.name,
                                            req.method().as_str().to_lowercase(),
                                            req.uri().path()
                                        ),
                                    ),
                                    None => text(401, "Unauthorized"),
                                };
                                Ok::<_, Infallible>(resp)
                            }
                        });
                        let _ = builder
                            .serve_connection(TokioIo::new(tls), svc)
                            .with_upgrades()
                            .await;
                    }
                    None => {
                        let svc = service_fn(move |req| {
                            let api = api.clone();
                            async move { Ok::<_, Infallible>(api.handle(req).await) }
                        });
                        let _ = builder
                            .serve_connection(TokioIo::new(tcp), svc)
                            .with_upgrades()
                            .await;
                    }
                }
            });
        }
    }

    /// Handles one authorized request.
    pub async fn handle(&self, req: http::Request<Incoming>) -> Resp {
        let path = req.uri().path().to_string();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = req.method().clone();
        let get_or_post = matches!(method, http::Method::GET | http::Method::POST);
        let r = match parts.as_slice() {
            ["healthz"] => return text(200, "ok"),
            ["containerLogs", ns, pod, c] if method == http::Method::GET => {
                self.container_logs(ns, pod, c, &req).await
            }
            [kind @ ("exec" | "attach"), ns, pod, c] if get_or_post => {
                let kind = *kind;
                let (ns, pod, c) = (ns.to_string(), pod.to_string(), c.to_string());
                self.exec_or_attach(kind, &ns, &pod, &c, req).await
            }
            ["portForward", ns, pod] if get_or_post => {
                let (ns, pod) = (ns.to_string(), pod.to_string());
                self.port_forward(&ns, &pod, req).await
            }
            _ => return text(404, "404 page not found"),
        };
        match r {
            Ok(r) => r,
            Err(HttpError(code, msg)) => text(code, msg),
        }
    }

    /// The pod's sandboxes, newest first.
    async fn sandboxes(&self, ns: &str, pod: &str) -> Result<Vec<cri::PodSandbox>, HttpError> {
        let mut items = self
            .runtime
            .cri()
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await
            .map_err(|s| HttpError::cri("listing pod sandboxes", s))?
            .into_inner()
            .items;
        items.retain(|s| {
            s.metadata
                .as_ref()
                .is_some_and(|m| m.namespace == ns && m.name == pod)
        });
        items.sort_by_key(|s| {
            (
                std::cmp::Reverse(s.state == cri::PodSandboxState::SandboxReady as i32),
                std::cmp::Reverse(s.created_at),
            )
        });
        if items.is_empty() {
            return Err(HttpError(
                404,
                format!("pod \"{pod}\" in namespace \"{ns}\" not found"),
            ));
        }
        Ok(items)
    }

    /// The pod's containers named `name`, newest first.
    async fn containers(
        &self,
        ns: &str,
        pod: &str,
        name: &str,
    ) -> Result<Vec<cri::Container>, HttpError> {
        let sandboxes = self.sandboxes(ns, pod).await?;
        let mut out = Vec::new();
        for s in &sandboxes {
            let items = self
                .runtime
                .cri()
                .list_containers(cri::ListContainersRequest {
                    filter: Some(cri::ContainerFilter {
                        pod_sandbox_id: s.id.clone(),
                        ..Default::default()
                    }),
                })
                .await
                .map_err(|s| HttpError::cri("listing containers", s))?
                .into_inner()
                .containers;
            out.extend(
                items
                    .into_iter()
                    .filter(|c| c.metadata.as_ref().is_some_and(|m| m.name == name)),
            );
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        if out.is_empty() {
            return Err(HttpError::bad(format!(
                "container \"{name}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            )));
        }
        Ok(out)
    }

    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, HttpError> {
        self.runtime
            .cri()
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .map_err(|s| HttpError::cri("getting the container status", s))?
            .into_inner()
            .status
            .ok_or_else(|| HttpError(500, format!("no status for container {id}")))
    }

    async fn container_logs(
        &self,
        ns: &str,
        pod: &str,
        name: &str,
        req: &http::Request<Incoming>,
    ) -> Result<Resp, HttpError> {
        let pairs = query_pairs(req.uri().query());
        let (opts, previous) =
            logs::LogOptions::from_query(&pairs, chrono::Utc::now()).map_err(HttpError::bad)?;
        let containers = self.containers(ns, pod, name).await?;
        let c = if previous {
            containers.get(1).ok_or_else(|| {
                HttpError::bad(format!(
                    "previous terminated container \"{name}\" in pod \"{pod}\" not found"
                ))
            })?
        } else {
            &containers[0]
        };
        let status = self.container_status(&c.id).await?;
        let path = PathBuf::from(&status.log_path);
        if status.log_path.is_empty()
            || self
                .log_root
                .as_ref()
                .is_some_and(|root| !logs::is_within(&path, root))
        {
            return Err(HttpError(
                500,
                format!("container \"{name}\" in pod \"{pod}\" has no log file"),
            ));
        }
        if !path.exists() {
            // A container that never wrote has no file yet; that is an empty log.
            if !opts.follow {
                return Ok(plain_stream(futures::stream::empty().boxed()));
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let rt = self.runtime.clone();
        let id = c.id.clone();
        let running = move || {
            let rt = rt.clone();
            let id = id.clone();
            async move {
                rt.cri()
                    .container_status(cri::ContainerStatusRequest {
                        container_id: id,
                        verbose: false,
                    })
                    .await
                    .ok()
                    .and_then(|r| r.into_inner().status)
                    .is_some_and(|s| s.state == cri::ContainerState::ContainerRunning as i32)
            }
        };
        tokio::spawn(async move {
            // Wait for a file that is about to appear (a container starting up).
            for _ in 0..50 {
                if path.exists() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if let Err(e) = logs::stream(path, opts, running, tx).await {
                tracing::debug!(error = %e, "log stream ended");
            }
        });
        let s =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Ok(plain_stream(s.boxed()))
    }

    async fn exec_or_attach(
        &self,
        kind: &str,
        ns: &str,
        pod: &str,
        name: &str,
        req: http::Request<Incoming>,
    ) -> Result<Resp, HttpError> {
        let pairs = query_pairs(req.uri().query());
        let flag = |k: &str| {
            pairs
                .iter()
                .any(|(n, v)| n == k && matches!(v.as_str(), "1" | "true" | "True" | ""))
        };
        let containers = self.containers(ns, pod, name).await?;
        let c = &containers[0];
        if c.state != cri::ContainerState::ContainerRunning as i32 {
            return Err(HttpError::bad(format!("container not found (\"{name}\")")));
        }
        let (tty, stdin, stdout, stderr) =
            (flag("tty"), flag("stdin"), flag("stdout"), flag("stderr"));
        let url = if kind == "exec" {
            let cmd: Vec<String> = pairs
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect();
            if cmd.is_empty() {
                return Err(HttpError::bad("you must specify at least 1 command"));
            }
            self.runtime
                .cri()
                .exec(cri::ExecRequest {
                    container_id: c.id.clone(),
                    cmd,
                    tty,
                    stdin,
                    stdout,
                    // With a TTY stderr is merged into stdout, as upstream requires.
                    stderr: stderr && !tty,
                })
                .await
                .map_err(|s| HttpError::cri("exec", s))?
                .into_inner()
                .url
        } else {
            self.runtime
                .cri()
                .attach(cri::AttachRequest {
                    container_id: c.id.clone(),
                    stdin,
                    tty,
                    stdout,
                    stderr: stderr && !tty,
                })
                .await
                .map_err(|s| HttpError::cri("attach", s))?
                .into_inner()
                .url
        };
        if is_upgrade(req.headers()) && wsstream::is_websocket(req.headers()) {
            if let Some(protocol) = wsstream::negotiate(req.headers()) {
                let streams = wsstream::Streams {
                    stdin,
                    stdout,
                    stderr: stderr && !tty,
                    tty,
                };
                return wsstream::serve(&url, streams, protocol, req).await;
            }
        }
        proxy_stream(&url, req).await
    }

    async fn port_forward(
        &self,
        ns: &str,
        pod: &str,
        req: http::Request<Incoming>,
    ) -> Result<Resp, HttpError> {
        let pairs = query_pairs(req.uri().query());
        let mut ports = Vec::new();
        for (k, v) in &pairs {
            if k == "port" || k == "ports" {
                for p in v.split(',').filter(|p| !p.is_empty()) {
                    ports.push(
                        p.trim()
                            .parse::<i32>()
                            .map_err(|_| HttpError::bad(format!("invalid port {p:?}")))?,
                    );
                }
            }
        }
        let sandboxes = self.sandboxes(ns, pod).await?;
        let url = self
            .runtime
            .cri()
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: sandboxes[0].id.clone(),
                port: ports,
            })
            .await
            .map_err(|s| HttpError::cri("port-forward", s))?
            .into_inner()
            .url;
        if is_upgrade(req.headers()) && wsstream::is_websocket(req.headers()) {
            let protocols = wsstream::tunneled_protocols(req.headers());
            if !protocols.is_empty() {
                return wsstream::serve_tunnel(&url, &protocols, req).await;
            }
        }
        proxy_stream(&url, req).await
    }
}

fn plain_stream(s: futures::stream::BoxStream<'static, Bytes>) -> Resp {
    let body = StreamBody::new(s.map(|b| Ok::<_, Infallible>(Frame::data(b))));
    http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(BodyExt::boxed_unsync(body))
        .expect("valid response")
}

/// Serves the agent's API for the agent configured by `config` on `0.0.0.0:port` with the
/// node's credentials until `shutdown` resolves. The CRI endpoint is the configured one or the
/// socket of the containerd the agent starts (it may come up later: CRI calls reconnect).
pub async fn run(
    config: &crate::AgentConfig,
    creds: &bootstrap::NodeCredentials,
    port: u16,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let agent_dir = config.agent_dir();
    let endpoint = match &config.container_runtime_endpoint {
        Some(e) => e.clone(),
        None => crate::runtime::ContainerdPaths::new(&agent_dir)
            .socket()
            .to_string_lossy()
            .into_owned(),
    };
    let runtime = Runtime::connect(&endpoint)?;
    let tls = creds.server_tls()?;
    let listener = TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("binding the agent API on port {port}"))?;
    tracing::info!(port, "agent API listening");
    AgentApi::new(runtime, Some(agent_dir.join("logs")))
        .serve(listener, Some(tls), shutdown)
        .await;
    Ok(())
}

/// Multi-valued query decoding (exec's `command` repeats).
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
        && headers.contains_key(http::header::UPGRADE)
}

/// Proxies `req` to `url` on the runtime's streaming server: the upgrade handshake passes
/// through unchanged, then both upgraded connections are spliced.
async fn proxy_stream(url: &str, mut req: http::Request<Incoming>) -> Result<Resp, HttpError> {
    let uri: http::Uri = url.parse().map_err(|e| {
        HttpError(
            500,
            format!("runtime returned a bad streaming URL {url:?}: {e}"),
        )
    })?;
    if uri.scheme_str() != Some("http") {
        return Err(HttpError(
            500,
            format!("unsupported streaming URL scheme in {url:?}"),
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| HttpError(500, format!("streaming URL {url:?} has no host")))?
        .clone();
    let tcp = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| HttpError(500, format!("connecting to the streaming server: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| HttpError(500, format!("connecting to the streaming server: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut out = http::Request::builder()
        .method(req.method().clone())
        .uri(path)
        .header(http::header::HOST, authority.as_str());
    for (k, v) in req.headers() {
        if !matches!(
            k.as_str(),
            "host" | "authorization" | "content-length" | "transfer-encoding"
        ) {
            out = out.header(k, v);
        }
    }
    let out = out
        .body(Empty::<Bytes>::new())
        .map_err(|e| HttpError(500, e.to_string()))?;
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| HttpError(500, format!("streaming server: {e}")))?;
    let status = resp.status();
    let mut reply = http::Response::builder().status(status);
    for (k, v) in resp.headers() {
        if status == http::StatusCode::SWITCHING_PROTOCOLS
            || !matches!(k.as_str(), "connection" | "transfer-encoding")
        {
            reply = reply.header(k, v);
        }
    }
    if status == http::StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(HttpError(
                500,
                "streaming server switched protocols unasked".into(),
            ));
        };
        let server_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::join!(client_upgrade, server_upgrade) {
                (Ok(c), Ok(s)) => {
                    let mut c = TokioIo::new(c);
                    let mut s = TokioIo::new(s);
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                }
                (c, s) => {
                    tracing::debug!(client = ?c.err(), server = ?s.err(), "stream upgrade failed")
                }
            }
        });
        return Ok(reply.body(full(Bytes::new())).expect("valid response"));
    }
    let body = http_body_util::BodyStream::new(resp.into_body())
        .take_while(|r| futures::future::ready(r.is_ok()))
        .map(|r| Ok::<_, Infallible>(r.unwrap_or_else(|_| Frame::data(Bytes::new()))));
    Ok(reply
        .body(BodyExt::boxed_unsync(StreamBody::new(body)))
        .expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_server_and_admins_are_authorized() {
        let u = |name: &str, groups: &[&str]| UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert!(authorized(&u(APISERVER_USER, &["system:masters"])));
        assert!(authorized(&u("system:admin", &["system:masters"])));
        assert!(!authorized(&u("system:node:n1", &["system:nodes"])));
        assert!(!authorized(&u("bob", &[])));
    }

    #[test]
    fn queries_keep_repeats() {
        let p = query_pairs(Some("command=sh&command=-c&command=echo%20hi&tty=1"));
        assert_eq!(p[2], ("command".into(), "echo hi".into()));
        assert_eq!(p[3], ("tty".into(), "1".into()));
    }
}
