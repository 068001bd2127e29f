//! Joining nodes with a token, in the manner of k3s.
//!
//! The server writes a join token to `<data-dir>/token` in k3s's format
//! `K10<sha256 of the CA PEM, hex>::server:<secret>`. An agent that holds it:
//! 1. fetches `GET /cacerts` (unauthenticated) and trusts the CA only if its hash matches the
//!    token's, so a man in the middle cannot pose as the server;
//! 2. calls `POST /skiff/v1/node-certificate` over TLS verified by that CA, with the token as
//!    bearer and a body `{"nodeName": "...", "addresses": ["10.0.0.5", ...]}`, and receives
//!    a client certificate `CN=system:node:<name>, O=system:nodes`, a serving certificate for
//!    its port 10250 (SANs: the node name and the addresses), their keys, and the CA.
//!
//! This is simpler than upstream's bootstrap token plus CertificateSigningRequest flow and gives
//! the agent the same credentials.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use skiff_pki::Pki;

use crate::error::{ApiError, ApiResult};
use crate::http_util::{bytes_response, json_response, Resp};
use crate::ApiServer;

/// Path of the CA certificate endpoint (unauthenticated, PEM).
pub const CACERTS_PATH: &str = "/cacerts";
/// Path of the node certificate endpoint (token as bearer).
pub const NODE_CERT_PATH: &str = "/skiff/v1/node-certificate";
/// File under the data dir holding the join token.
pub const TOKEN_FILE: &str = "token";
/// User name of the API server's client certificate towards node agents (upstream's
/// `kube-apiserver-kubelet-client`).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// Group of [`KUBELET_CLIENT_USER`].
pub const KUBELET_CLIENT_GROUP: &str = "system:masters";
/// Group of node client certificates.
pub const NODES_GROUP: &str = "system:nodes";
/// Lifetime of the node certificates issued to joining agents.
pub const NODE_CERT_VALIDITY: Duration = skiff_pki::LEAF_VALIDITY;

const TOKEN_PREFIX: &str = "K10";
const TOKEN_USER: &str = "server";

/// A join token: the CA's hash and the shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex SHA-256 of the CA certificate PEM as `/cacerts` serves it; empty in a short token.
    pub ca_hash: String,
    /// The secret.
    pub secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ca_hash.is_empty() {
            f.write_str(&self.secret)
        } else {
            write!(
                f,
                "{TOKEN_PREFIX}{}::{TOKEN_USER}:{}",
                self.ca_hash, self.secret
            )
        }
    }
}

impl JoinToken {
    /// Parses a full token (`K10<hash>::server:<secret>`) or a short one (just the secret).
    pub fn parse(s: &str) -> Result<JoinToken, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty token".into());
        }
        let Some(rest) = s.strip_prefix(TOKEN_PREFIX) else {
            if s.contains("::") {
                return Err("token must start with K10".into());
            }
            return Ok(JoinToken {
                ca_hash: String::new(),
                secret: s.to_string(),
            });
        };
        let (hash, creds) = rest
            .split_once("::")
            .ok_or_else(|| "token has no '::' after the CA hash".to_string())?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("token's CA hash is not a hex SHA-256".into());
        }
        let secret = match creds.split_once(':') {
            Some((_user, secret)) => secret,
            None => creds,
        };
        if secret.is_empty() {
            return Err("token has an empty secret".into());
        }
        Ok(JoinToken {
            ca_hash: hash.to_ascii_lowercase(),
            secret: secret.to_string(),
        })
    }

    /// Whether `presented` (full or short) carries this token's secret and, if it names a CA
    /// hash, this token's CA hash.
    pub fn accepts(&self, presented: &str) -> bool {
        let Ok(p) = JoinToken::parse(presented) else {
            return false;
        };
        let hash_ok = p.ca_hash.is_empty() || p.ca_hash == self.ca_hash;
        hash_ok && constant_time_eq(p.secret.as_bytes(), self.secret.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hex SHA-256 of a CA bundle, as carried in full tokens.
pub fn ca_hash(ca_pem: &str) -> String {
    Sha256::digest(ca_pem.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Reads `<data_dir>/token`, keeping its secret, or creates it with a fresh one; the file is
/// (re)written with the current CA hash, mode 0600. Returns the token.
pub fn ensure_token(data_dir: &Path, ca_pem: &str) -> anyhow::Result<JoinToken> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let path = data_dir.join(TOKEN_FILE);
    let secret = match std::fs::read_to_string(&path) {
        Ok(s) => {
            JoinToken::parse(&s)
                .map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))?
                .secret
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => new_secret(),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    let token = JoinToken {
        ca_hash: ca_hash(ca_pem),
        secret,
    };
    let text = format!("{token}\n");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        let tmp = data_dir.join(format!(".{TOKEN_FILE}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(token)
}

/// What the server needs to admit nodes.
pub(crate) struct JoinState {
    inner: RwLock<Option<(Arc<Pki>, JoinToken)>>,
}

impl Default for JoinState {
    fn default() -> Self {
        JoinState {
            inner: RwLock::new(None),
        }
    }
}

/// The body of a node certificate request.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertificateRequest {
    /// The node's name (a DNS-1123 subdomain).
    pub node_name: String,
    /// Addresses (IPs or DNS names) the serving certificate must cover.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// The answer to a node certificate request (all PEM).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertificateResponse {
    /// The cluster CA.
    pub ca_cert: String,
    /// Client certificate `CN=system:node:<name>, O=system:nodes`.
    pub client_cert: String,
    /// Its key.
    pub client_key: String,
    /// Serving certificate for the agent's port 10250.
    pub serving_cert: String,
    /// Its key.
    pub serving_key: String,
}

fn valid_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Issues a node's credentials from the cluster CA.
pub fn issue_node_credentials(
    pki: &Pki,
    req: &NodeCertificateRequest,
) -> Result<NodeCertificateResponse, String> {
    if !valid_subdomain(&req.node_name) {
        return Err(format!(
            "invalid node name {:?}: must be a lowercase RFC 1123 subdomain",
            req.node_name
        ));
    }
    let cn = format!("system:node:{}", req.node_name);
    let (client_cert, client_key) = pki
        .issue_client_cert(&cn, &[NODES_GROUP], NODE_CERT_VALIDITY)
        .map_err(|e| format!("issuing the client certificate: {e}"))?;
    let mut sans = vec![req.node_name.clone()];
    for a in &req.addresses {
        let a = a.trim();
        if a.parse::<std::net::IpAddr>().is_err() && !valid_subdomain(a) {
            return Err(format!("invalid address {a:?}"));
        }
        if !sans.iter().any(|s| s == a) {
            sans.push(a.to_string());
        }
    }
    let (serving_cert, serving_key) = pki
        .issue_server_cert(&req.node_name, &sans, NODE_CERT_VALIDITY)
        .map_err(|e| format!("issuing the serving certificate: {e}"))?;
    Ok(NodeCertificateResponse {
        ca_cert: pki.ca_cert_pem().to_string(),
        client_cert,
        client_key,
        serving_cert,
        serving_key,
    })
}

/// The API server's client TLS configuration towards node agents: trusts the cluster CA and
/// presents a fresh `kube-apiserver-kubelet-client` certificate in `system:masters`.
pub fn kubelet_client_tls(pki: &Pki) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let (cert, key) = pki.issue_client_cert(
        KUBELET_CLIENT_USER,
        &[KUBELET_CLIENT_GROUP],
        skiff_pki::LEAF_VALIDITY,
    )?;
    Ok(skiff_pki::client_tls_config(
        pki.ca_cert_pem(),
        Some((&cert, &key)),
    )?)
}

/// Sets up everything nodes need from the server: writes or refreshes `<data_dir>/token`,
/// enables the join endpoints on `server`, and gives it a client certificate for the agents'
/// port 10250. Returns the token. `skiff server` calls this once at start.
pub fn enable_nodes(
    server: &ApiServer,
    data_dir: &Path,
    pki: Arc<Pki>,
) -> anyhow::Result<JoinToken> {
    let token = ensure_token(data_dir, pki.ca_cert_pem())?;
    server.set_kubelet_client_tls(kubelet_client_tls(&pki)?);
    server.enable_join(pki, token.clone());
    server.load_service_account_key(&data_dir.join("tls"))?;
    Ok(token)
}

impl ApiServer {
    /// Enables `/cacerts` and the node certificate endpoint with `pki` and `token`.
    pub fn enable_join(&self, pki: Arc<Pki>, token: JoinToken) {
        *self.join.inner.write().expect("join lock") = Some((pki, token));
    }

    /// Serves the join endpoints; `None` when `path` is none of them.
    pub(crate) fn join_endpoint(
        &self,
        method: &http::Method,
        path: &str,
        authorization: Option<&str>,
        body: &Bytes,
    ) -> Option<ApiResult<Resp>> {
        if path != CACERTS_PATH && path != NODE_CERT_PATH {
            return None;
        }
        let state = self.join.inner.read().expect("join lock").clone();
        let Some((pki, token)) = state else {
            return Some(Err(ApiError::path_not_found()));
        };
        if path == CACERTS_PATH {
            if method != http::Method::GET {
                return Some(Err(ApiError::method_not_allowed()));
            }
            return Some(Ok(bytes_response(
                200,
                "application/x-pem-file",
                pki.ca_cert_pem().to_string(),
            )));
        }
        if method != http::Method::POST {
            return Some(Err(ApiError::method_not_allowed()));
        }
        let presented = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim);
        if !presented.is_some_and(|p| token.accepts(p)) {
            return Some(Err(ApiError::unauthorized()));
        }
        let req: NodeCertificateRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return Some(Err(ApiError::bad_request(format!(
                    "decoding the node certificate request: {e}"
                ))))
            }
        };
        Some(match issue_node_credentials(&pki, &req) {
            Ok(resp) => {
                tracing::info!(node = %req.node_name, "issued node certificates");
                Ok(json_response(200, &json!(resp)))
            }
            Err(e) => Err(ApiError::bad_request(e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn token_format_round_trips() {
        let t = JoinToken {
            ca_hash: ca_hash("pem"),
            secret: "abc123".into(),
        };
        let s = t.to_string();
        assert!(s.starts_with("K10"));
        assert!(s.ends_with("::server:abc123"));
        assert_eq!(JoinToken::parse(&s).unwrap(), t);
        let short = JoinToken::parse("abc123").unwrap();
        assert!(short.ca_hash.is_empty());
        assert_eq!(short.to_string(), "abc123");
        assert!(JoinToken::parse("K10xyz::server:abc").is_err());
        assert!(JoinToken::parse(&format!("K10{}::server:", ca_hash("x"))).is_err());
        assert!(JoinToken::parse("").is_err());
    }

    #[test]
    fn token_verification() {
        let t = JoinToken {
            ca_hash: ca_hash("ca"),
            secret: "s3cret".into(),
        };
        assert!(t.accepts(&t.to_string()));
        assert!(t.accepts("s3cret"));
        assert!(!t.accepts("s3creT"));
        assert!(!t.accepts("s3cret2"));
        let other_ca = JoinToken {
            ca_hash: ca_hash("other"),
            secret: "s3cret".into(),
        };
        assert!(!t.accepts(&other_ca.to_string()));
    }

    #[test]
    fn ensure_token_creates_then_keeps_the_secret() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let t1 = ensure_token(dir.path(), "ca1").unwrap();
        assert_eq!(t1.secret.len(), 64);
        let text = std::fs::read_to_string(dir.path().join(TOKEN_FILE)).unwrap();
        assert_eq!(text.trim(), t1.to_string());
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let t2 = ensure_token(dir.path(), "ca1").unwrap();
        assert_eq!(t1, t2);
        let t3 = ensure_token(dir.path(), "ca2").unwrap();
        assert_eq!(t3.secret, t1.secret);
        assert_eq!(t3.ca_hash, ca_hash("ca2"));
        let other = tempfile::tempdir().unwrap();
        assert_ne!(ensure_token(other.path(), "ca1").unwrap().secret, t1.secret);
    }

    #[test]
    fn node_credentials_carry_the_node_identity() {
        let dir = tempfile::tempdir().unwrap();
        let pki = skiff_pki::ensure(dir.path(), &skiff_pki::PkiOptions::default()).unwrap();
        let out = issue_node_credentials(
            &pki,
            &NodeCertificateRequest {
                node_name: "node-1".into(),
                addresses: vec!["10.1.2.3".into()],
            },
        )
        .unwrap();
        let der =
            rustls::pki_types::CertificateDer::from_pem_slice(out.client_cert.as_bytes()).unwrap();
        let user = skiff_pki::identity_from_cert(der.as_ref()).unwrap();
        assert_eq!(user.name, "system:node:node-1");
        assert!(user.groups.iter().any(|g| g == "system:nodes"));
        let der =
            rustls::pki_types::CertificateDer::from_pem_slice(out.serving_cert.as_bytes()).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let san = format!("{:?}", x.subject_alternative_name().unwrap().unwrap().value);
        assert!(san.contains("node-1"), "{san}");
        assert!(
            san.contains("10.1.2.3") || san.contains("[10, 1, 2, 3]"),
            "{san}"
        );
        assert!(issue_node_credentials(
            &pki,
            &NodeCertificateRequest {
                node_name: "Bad_Name".into(),
                addresses: vec![],
            }
        )
        .is_err());
    }
}
