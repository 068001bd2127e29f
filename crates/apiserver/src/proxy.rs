//! The subresources served by node agents: `pods/log`, `pods/exec`, `pods/attach`,
//! `pods/portforward` and `nodes/proxy`.
//!
//! As upstream's API server, this finds the pod's node, resolves the node's agent address from
//! the Node object (`status.addresses`, `status.daemonEndpoints.kubeletEndpoint.Port`) and
//! forwards the request to the agent's HTTPS API, presenting the API server's kubelet client
//! certificate. Upgrade requests (exec, attach, port-forward over SPDY/3.1 or WebSocket) are
//! proxied byte for byte once both sides switched protocols: the agent (and behind it the CRI
//! streaming server) speaks the streaming protocols, the API server does not parse them.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{ApiError, ApiResult};
use crate::http_util::{Body, Resp};
use crate::ApiServer;

/// Default port of the agent's API (upstream's kubelet port).
pub const DEFAULT_AGENT_PORT: u16 = 10250;
/// How long dialing an agent (TCP and TLS) may take, as upstream's 30 s dial timeout but
/// shorter: agents are one hop away.
const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest error body read back from an agent.
const MAX_ERROR_BODY: usize = 64 << 10;

/// How the API server reaches node agents.
#[derive(Default)]
pub(crate) struct ProxyState {
    tls: RwLock<Option<Arc<rustls::ClientConfig>>>,
}

/// A request the agents serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyTarget {
    /// `pods/{log,exec,attach,portforward}`.
    Pod {
        /// Namespace.
        namespace: String,
        /// Pod name.
        name: String,
        /// `log`, `exec`, `attach` or `portforward`.
        subresource: &'static str,
    },
    /// `nodes/proxy` with the path after `proxy` (`/` when none).
    Node {
        /// Node name.
        name: String,
        /// Path on the agent.
        path: String,
    },
}

impl ProxyTarget {
    /// Verb and resource for metrics.
    pub fn metric_labels(&self, method: &http::Method) -> (&'static str, String) {
        let verb = match *method {
            http::Method::GET | http::Method::HEAD => "get",
            http::Method::POST => "create",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE => "delete",
            _ => "get",
        };
        let res = match self {
            ProxyTarget::Pod { subresource, .. } => format!("pods/{subresource}"),
            ProxyTarget::Node { .. } => "nodes/proxy".to_string(),
        };
        (verb, res)
    }
}

/// Recognizes the core/v1 paths this module serves.
pub fn match_path(path: &str) -> Option<ProxyTarget> {
    let rest = path.strip_prefix("/api/v1/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["namespaces", ns, "pods", name, sub] if !ns.is_empty() && !name.is_empty() => {
            let subresource = match *sub {
                "log" => "log",
                "exec" => "exec",
                "attach" => "attach",
                "portforward" => "portforward",
                _ => return None,
            };
            Some(ProxyTarget::Pod {
                namespace: ns.to_string(),
                name: name.to_string(),
                subresource,
            })
        }
        ["nodes", name, "proxy", ..] if !name.is_empty() => {
            let tail = parts[3..].join("/");
            Some(ProxyTarget::Node {
                name: name.to_string(),
                path: format!("/{tail}"),
            })
        }
        _ => None,
    }
}

/// A connection to an agent: TLS when configured, else plain TCP (in-process tests).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type OutBody = BoxBody<Bytes, std::io::Error>;

fn empty() -> OutBody {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
}

/// Streams an agent's response body to the client, ending it on an upstream error.
fn stream_body(body: Incoming) -> Body {
    let s = http_body_util::BodyStream::new(body)
        .take_while(|r| futures::future::ready(r.is_ok()))
        .map(|r| Ok::<_, Infallible>(r.unwrap_or_else(|_| Frame::data(Bytes::new()))));
    BodyExt::boxed(StreamBody::new(s))
}

fn join_query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    }
}

/// The container a request addresses, defaulted as upstream's `validateContainer`.
fn pick_container(pod: &Value, name: &str, requested: Option<&str>) -> ApiResult<String> {
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names("containers");
    match requested.filter(|c| !c.is_empty()) {
        Some(c) => {
            let all = [
                names("initContainers"),
                containers,
                names("ephemeralContainers"),
            ]
            .concat();
            if all.iter().any(|n| n == c) {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None => match containers.len() {
            1 => Ok(containers[0].clone()),
            0 => Err(ApiError::bad_request(format!(
                "pod {name} does not have a container"
            ))),
            _ => {
                let all = [
                    names("initContainers"),
                    containers,
                    names("ephemeralContainers"),
                ]
                .concat();
                Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    all.join(" ")
                )))
            }
        },
    }
}

/// Multi-valued query decoding (exec's `command` repeats).
fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Decodes a percent-encoded query component (`+` is a space).
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

/// Validates `pods/log` parameters as upstream's `PodLogOptions` validation, and returns the
/// container and the agent's query.
fn log_query(pairs: &[(String, String)]) -> ApiResult<(Option<String>, String)> {
    let get = |k: &str| {
        pairs
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    let invalid = |field: &str, value: &str, msg: &str| {
        ApiError::new(
            422,
            "Invalid",
            format!("PodLogOptions \"\" is invalid: {field}: Invalid value: {value}: {msg}"),
        )
    };
    let mut out: Vec<(&str, String)> = Vec::new();
    for flag in [
        "follow",
        "previous",
        "timestamps",
        "insecureSkipTLSVerifyBackend",
    ] {
        if let Some(v) = get(flag) {
            let b = match v {
                "" | "true" | "1" | "True" | "TRUE" | "t" | "T" => true,
                "false" | "0" | "False" | "FALSE" | "f" | "F" => false,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "invalid boolean value {other:?} for {flag}"
                    )))
                }
            };
            if b && flag != "insecureSkipTLSVerifyBackend" {
                out.push((flag, "true".into()));
            }
        }
    }
    let int = |k: &str| -> ApiResult<Option<i64>> {
        match get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value {v:?} for {k}"))),
        }
    };
    if let Some(t) = int("tailLines")? {
        if t < 0 {
            return Err(invalid(
                "tailLines",
                &t.to_string(),
                "must be greater than or equal to 0",
            ));
        }
        out.push(("tailLines", t.to_string()));
    }
    if let Some(l) = int("limitBytes")? {
        if l < 1 {
            return Err(invalid(
                "limitBytes",
                &l.to_string(),
                "must be greater than 0",
            ));
        }
        out.push(("limitBytes", l.to_string()));
    }
    let since_seconds = int("sinceSeconds")?;
    let since_time = get("sinceTime").filter(|v| !v.is_empty());
    if since_seconds.is_some() && since_time.is_some() {
        return Err(ApiError::new(
            422,
            "Invalid",
            "PodLogOptions \"\" is invalid: : Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified",
        ));
    }
    if let Some(s) = since_seconds {
        if s < 1 {
            return Err(invalid(
                "sinceSeconds",
                &s.to_string(),
                "must be greater than 0",
            ));
        }
        out.push(("sinceSeconds", s.to_string()));
    }
    if let Some(t) = since_time {
        if chrono::DateTime::parse_from_rfc3339(t).is_err() {
            return Err(ApiError::bad_request(format!(
                "invalid value {t:?} for sinceTime: not an RFC 3339 time"
            )));
        }
        out.push(("sinceTime", t.to_string()));
    }
    if let Some(s) = get("stream").filter(|v| !v.is_empty()) {
        if s != "All" && s != "Stdout" && s != "Stderr" {
            return Err(invalid(
                "stream",
                s,
                "supported values: \"All\", \"Stderr\", \"Stdout\"",
            ));
        }
        if s != "All" {
            out.push(("stream", s.to_string()));
        }
    }
    Ok((get("container").map(str::to_string), join_query(&out)))
}

/// The agent's address from a Node object: the first InternalIP, else Hostname, else ExternalIP,
/// and the kubelet endpoint's port.
pub fn node_agent_address(node: &Value) -> Option<(String, u16)> {
    let addrs = node["status"]["addresses"].as_array()?;
    let pick = |t: &str| {
        addrs
            .iter()
            .find(|a| a["type"] == t)
            .and_then(|a| a["address"].as_str())
            .filter(|a| !a.is_empty())
    };
    let host = pick("InternalIP")
        .or_else(|| pick("Hostname"))
        .or_else(|| pick("ExternalIP"))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| *p > 0 && *p <= u16::MAX as u64)
        .map(|p| p as u16)
        .unwrap_or(DEFAULT_AGENT_PORT);
    Some((host.to_string(), port))
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

/// Headers not forwarded to the agent: hop-by-hop ones (re-added for upgrades) and the
/// client's credentials, which the agent must not see.
fn forwardable(name: &http::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "authorization"
            | "proxy-authorization"
            | "host"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "keep-alive"
            | "proxy-connection"
            | "impersonate-user"
            | "impersonate-group"
            | "impersonate-uid"
    ) && !name.as_str().starts_with("impersonate-extra-")
}

impl ApiServer {
    /// Sets the TLS configuration used towards node agents (see
    /// [`crate::join::kubelet_client_tls`]). Without it agents are dialed over plain HTTP,
    /// which only in-process tests do.
    pub fn set_kubelet_client_tls(&self, tls: Arc<rustls::ClientConfig>) {
        *self.proxy.tls.write().expect("proxy lock") = Some(tls);
    }

    async fn dial_agent(&self, host: &str, port: u16) -> ApiResult<Box<dyn Io>> {
        let unavailable = |e: &dyn std::fmt::Display| {
            ApiError::new(502, "InternalError", format!("error dialing backend: {e}"))
        };
        let tcp = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect((host, port)))
            .await
            .map_err(|_| unavailable(&"dial timeout"))?
            .map_err(|e| unavailable(&e))?;
        let _ = tcp.set_nodelay(true);
        let tls = self.proxy.tls.read().expect("proxy lock").clone();
        match tls {
            None => Ok(Box::new(tcp)),
            Some(cfg) => {
                let name = match host.parse::<IpAddr>() {
                    Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                    Err(_) => rustls::pki_types::ServerName::try_from(host.to_string())
                        .map_err(|e| unavailable(&e))?,
                };
                let conn = tokio::time::timeout(
                    DIAL_TIMEOUT,
                    tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
                )
                .await
                .map_err(|_| unavailable(&"TLS handshake timeout"))?
                .map_err(|e| unavailable(&e))?;
                Ok(Box::new(conn))
            }
        }
    }

    async fn node_address(&self, node_name: &str) -> ApiResult<(String, u16)> {
        let r = skiff_api::registry::find("", "v1", "nodes").expect("nodes are served");
        let (node, _) = self
            .read(&r.key(None, node_name))
            .await?
            .ok_or_else(|| ApiError::not_found(r, node_name))?;
        node_agent_address(&node).ok_or_else(|| {
            ApiError::internal(format!("node {node_name} has no address to reach it at"))
        })
    }

    /// Serves a [`ProxyTarget`].
    pub(crate) async fn proxy(
        &self,
        target: ProxyTarget,
        mut req: http::Request<crate::server::RequestBody>,
    ) -> ApiResult<Resp> {
        let pairs = query_pairs(req.uri().query());
        let (node_name, agent_path, is_log) = match &target {
            ProxyTarget::Node { name, path } => {
                let q = req
                    .uri()
                    .query()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default();
                (name.clone(), format!("{path}{q}"), false)
            }
            ProxyTarget::Pod {
                namespace,
                name,
                subresource,
            } => {
                let pods = skiff_api::registry::find("", "v1", "pods").expect("pods are served");
                let (pod, _) = self
                    .read(&pods.key(Some(namespace), name))
                    .await?
                    .ok_or_else(|| ApiError::not_found(pods, name))?;
                let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
                match *subresource {
                    "log" => {
                        if *req.method() != http::Method::GET {
                            return Err(ApiError::method_not_allowed());
                        }
                        let (container, q) = log_query(&pairs)?;
                        let container = pick_container(&pod, name, container.as_deref())?;
                        if node.is_empty() {
                            // Upstream streams nothing for a pod not bound to a node yet.
                            return Ok(http::Response::builder()
                                .status(200)
                                .header(http::header::CONTENT_TYPE, "text/plain")
                                .body(crate::http_util::full(Bytes::new()))
                                .expect("valid response"));
                        }
                        let q = if q.is_empty() { q } else { format!("?{q}") };
                        (
                            node,
                            format!("/containerLogs/{namespace}/{name}/{container}{q}"),
                            true,
                        )
                    }
                    sub => {
                        if !matches!(*req.method(), http::Method::GET | http::Method::POST) {
                            return Err(ApiError::method_not_allowed());
                        }
                        if node.is_empty() {
                            return Err(ApiError::bad_request(format!(
                                "pod {name} does not have a host assigned"
                            )));
                        }
                        let raw = req.uri().query().unwrap_or("");
                        let path = if sub == "portforward" {
                            format!("/portForward/{namespace}/{name}")
                        } else {
                            let requested = pairs
                                .iter()
                                .rev()
                                .find(|(k, _)| k == "container")
                                .map(|(_, v)| v.as_str());
                            let container = pick_container(&pod, name, requested)?;
                            format!("/{sub}/{namespace}/{name}/{container}")
                        };
                        let q = if raw.is_empty() {
                            String::new()
                        } else {
                            format!("?{raw}")
                        };
                        (node, format!("{path}{q}"), false)
                    }
                }
            }
        };
        let (host, port) = self.node_address(&node_name).await?;
        let upgrade = is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let io = self.dial_agent(&host, port).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| {
                ApiError::new(502, "InternalError", format!("error dialing backend: {e}"))
            })?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });

        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut out = http::Request::builder()
            .method(req.method().clone())
            .uri(agent_path)
            .header(http::header::HOST, authority);
        for (k, v) in req.headers() {
            if forwardable(k)
                && (upgrade || k != http::header::CONNECTION && k != http::header::UPGRADE)
            {
                out = out.header(k, v);
            }
        }
        let (_, body) = req.into_parts();
        let body: OutBody = if upgrade { empty() } else { body.boxed() };
        let out = out
            .body(body)
            .map_err(|e| ApiError::internal(format!("building the agent request: {e}")))?;
        let mut resp = sender.send_request(out).await.map_err(|e| {
            ApiError::new(
                502,
                "InternalError",
                format!("error talking to the node agent: {e}"),
            )
        })?;

        let status = resp.status();
        if status == http::StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return Err(ApiError::internal("node agent switched protocols unasked"));
            };
            let agent_upgrade = hyper::upgrade::on(&mut resp);
            let mut reply = http::Response::builder().status(101);
            for (k, v) in resp.headers() {
                reply = reply.header(k, v);
            }
            tokio::spawn(async move {
                let (c, a) = match tokio::join!(client_upgrade, agent_upgrade) {
                    (Ok(c), Ok(a)) => (c, a),
                    (c, a) => {
                        tracing::debug!(client = ?c.err(), agent = ?a.err(), "upgrade failed");
                        return;
                    }
                };
                let mut c = TokioIo::new(c);
                let mut a = TokioIo::new(a);
                let _ = tokio::io::copy_bidirectional(&mut c, &mut a).await;
            });
            return Ok(reply
                .body(crate::http_util::full(Bytes::new()))
                .expect("valid response"));
        }
        if is_log && !status.is_success() {
            // As upstream's response checker: the agent's error text becomes a Status.
            let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ERROR_BODY)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or(text);
            return Err(ApiError::new(
                status.as_u16(),
                reason_for(status.as_u16()),
                msg,
            ));
        }
        let mut reply = http::Response::builder().status(status);
        for (k, v) in resp.headers() {
            if k != http::header::CONNECTION && k != http::header::TRANSFER_ENCODING {
                reply = reply.header(k, v);
            }
        }
        Ok(reply
            .body(stream_body(resp.into_body()))
            .expect("valid response"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        assert_eq!(
            match_path("/api/v1/namespaces/default/pods/web/log"),
            Some(ProxyTarget::Pod {
                namespace: "default".into(),
                name: "web".into(),
                subresource: "log"
            })
        );
        assert!(match_path("/api/v1/namespaces/default/pods/web/status").is_none());
        assert!(match_path("/api/v1/namespaces/default/pods/web").is_none());
        assert_eq!(
            match_path("/api/v1/nodes/n1/proxy/stats/summary"),
            Some(ProxyTarget::Node {
                name: "n1".into(),
                path: "/stats/summary".into()
            })
        );
        assert_eq!(
            match_path("/api/v1/nodes/n1/proxy"),
            Some(ProxyTarget::Node {
                name: "n1".into(),
                path: "/".into()
            })
        );
        assert!(match_path("/apis/apps/v1/namespaces/x/pods/p/log").is_none());
    }

    #[test]
    fn containers_default_as_upstream() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        let e = pick_container(&pod, "p", None).unwrap_err();
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [i a b]"
        );
        assert_eq!(pick_container(&pod, "p", Some("i")).unwrap(), "i");
        assert_eq!(
            pick_container(&pod, "p", Some("x")).unwrap_err().message,
            "container x is not valid for pod p"
        );
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(pick_container(&one, "p", None).unwrap(), "only");
    }

    #[test]
    fn log_options_validate() {
        let q = |s: &str| log_query(&query_pairs(Some(s)));
        let (c, out) = q("container=c&follow=true&tailLines=5&timestamps=true").unwrap();
        assert_eq!(c.as_deref(), Some("c"));
        assert_eq!(out, "follow=true&timestamps=true&tailLines=5");
        assert_eq!(q("tailLines=-1").unwrap_err().code, 422);
        assert_eq!(q("limitBytes=0").unwrap_err().code, 422);
        assert_eq!(
            q("sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z")
                .unwrap_err()
                .code,
            422
        );
        let (_, out) = q("sinceTime=2024-01-01T00%3A00%3A00Z").unwrap();
        assert_eq!(out, "sinceTime=2024-01-01T00%3A00%3A00Z");
        assert_eq!(q("follow=maybe").unwrap_err().code, 400);
    }

    #[test]
    fn exec_query_keeps_repeated_commands() {
        let p = query_pairs(Some("command=sh&command=-c&command=echo+hi%21&stdout=true"));
        let cmds: Vec<&str> = p
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(cmds, ["sh", "-c", "echo hi!"]);
    }

    #[test]
    fn agent_address_from_node() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": "10.0.0.2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}}});
        assert_eq!(node_agent_address(&node), Some(("10.0.0.2".into(), 12345)));
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "h"}]}});
        assert_eq!(node_agent_address(&node), Some(("h".into(), 10250)));
        assert_eq!(node_agent_address(&json!({})), None);
    }
}
