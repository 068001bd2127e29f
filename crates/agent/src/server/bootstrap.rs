//! Joining a cluster with a token (`skiff agent --server URL --token TOKEN`), as k3s agents do.
//!
//! The token is `K10<sha256 of the CA PEM>::server:<secret>` (written by the server to
//! `<data-dir>/token`). The agent fetches `GET /cacerts` without trusting anything yet, accepts
//! the CA only when its hash matches the token's, then asks `POST /skiff/v1/node-certificate`
//! over TLS verified by that CA for its client certificate (`CN=system:node:<name>`,
//! `O=system:nodes`) and its serving certificate for port 10250. Everything is stored under the
//! agent's directory and reused while valid.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// CA certificate file under the agent's directory.
pub const CA_FILE: &str = "ca.crt";
/// Node client certificate file.
pub const CLIENT_CERT_FILE: &str = "client-kubelet.crt";
/// Node client key file.
pub const CLIENT_KEY_FILE: &str = "client-kubelet.key";
/// Serving certificate file (port 10250).
pub const SERVING_CERT_FILE: &str = "serving-kubelet.crt";
/// Serving key file.
pub const SERVING_KEY_FILE: &str = "serving-kubelet.key";
/// The agent's kubeconfig (node identity).
pub const KUBECONFIG_FILE: &str = "kubeconfig.yaml";

/// Certificates are renewed when they expire within this many seconds (90 days, as k3s).
const RENEW_BEFORE_SECS: i64 = 90 * 24 * 60 * 60;

/// A node's credentials (PEM).
#[derive(Clone)]
pub struct NodeCredentials {
    /// The cluster CA.
    pub ca_pem: String,
    /// `CN=system:node:<name>, O=system:nodes`.
    pub client_cert_pem: String,
    /// Its key.
    pub client_key_pem: String,
    /// The serving certificate for port 10250.
    pub serving_cert_pem: String,
    /// Its key.
    pub serving_key_pem: String,
    /// The kubeconfig written with the node identity.
    pub kubeconfig: PathBuf,
}

impl std::fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl NodeCredentials {
    /// A kube client configuration for the node identity, from the stored kubeconfig.
    pub async fn kube_config(&self) -> Result<kube::Config> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        Ok(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)
    }

    /// The TLS configuration of the agent's API (see [`super::tls_config`]).
    pub fn server_tls(&self) -> Result<Arc<rustls::ServerConfig>> {
        super::tls_config(&self.ca_pem, &self.serving_cert_pem, &self.serving_key_pem)
    }
}

/// The CA hash a full token carries.
pub fn token_ca_hash(token: &str) -> Result<String> {
    let t = token.trim();
    let rest = t.strip_prefix("K10").ok_or_else(|| {
        anyhow!("the token carries no CA hash: use the full token (K10...) from the server's <data-dir>/token")
    })?;
    let (hash, creds) = rest
        .split_once("::")
        .ok_or_else(|| anyhow!("malformed token: no '::' after the CA hash"))?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) || creds.is_empty() {
        bail!("malformed token");
    }
    Ok(hash.to_ascii_lowercase())
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Accepts any server certificate: only for fetching the CA, whose hash is then checked.
#[derive(Debug)]
struct TrustOnHash(Arc<CryptoProvider>);

impl ServerCertVerifier for TrustOnHash {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn insecure_tls() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustOnHash(provider)))
        .with_no_client_auth();
    Arc::new(cfg)
}

/// One HTTPS request; returns status and body.
async fn https(
    server_url: &str,
    tls: Arc<rustls::ClientConfig>,
    method: http::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<(u16, Bytes)> {
    let uri: http::Uri = server_url
        .parse()
        .with_context(|| format!("invalid server URL {server_url:?}"))?;
    if uri.scheme_str() != Some("https") {
        bail!("the server URL must be https://HOST:PORT, got {server_url:?}");
    }
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("the server URL {server_url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connecting to {server_url}"))?;
    let name = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.clone())?,
    };
    let tls = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with {server_url}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::builder().method(method).uri(path).header(
        http::header::HOST,
        uri.authority().map(|a| a.as_str()).unwrap_or(""),
    );
    if let Some(t) = bearer {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn read(dir: &Path, f: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(f)).ok()
}

fn write_private(path: &Path, data: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Whether a stored certificate is still good: parses, lasts long enough, and (when given) has
/// the subject common name `cn` and covers every address in `sans`.
fn cert_ok(pem: &str, cn: Option<&str>, sans: &[String]) -> bool {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::extensions::GeneralName;
    let Ok(der) = CertificateDer::from_pem_slice(pem.as_bytes()) else {
        return false;
    };
    let Ok((_, x)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return false;
    };
    let now = chrono::Utc::now().timestamp();
    if x.validity().not_after.timestamp() - now < RENEW_BEFORE_SECS {
        return false;
    }
    if let Some(cn) = cn {
        let got = x
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok());
        if got != Some(cn) {
            return false;
        }
    }
    if sans.is_empty() {
        return true;
    }
    let Ok(Some(ext)) = x.subject_alternative_name() else {
        return false;
    };
    sans.iter().all(|want| {
        ext.value.general_names.iter().any(|g| match g {
            GeneralName::DNSName(d) => d == want,
            GeneralName::IPAddress(b) => match want.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(a)) => *b == a.octets(),
                Ok(std::net::IpAddr::V6(a)) => *b == a.octets(),
                Err(_) => false,
            },
            _ => false,
        })
    })
}

/// Loads the node's credentials from `dir` when they are still valid for `node_name`,
/// `addresses` and the token's CA, else obtains new ones from `server_url` with `token` and
/// stores them (mode 0600) with a kubeconfig for the node identity.
pub async fn ensure_credentials(
    server_url: &str,
    token: &str,
    dir: &Path,
    node_name: &str,
    addresses: &[String],
) -> Result<NodeCredentials> {
    let want_hash = token_ca_hash(token)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cn = format!("system:node:{node_name}");
    let kubeconfig = dir.join(KUBECONFIG_FILE);
    let mut sans = vec![node_name.to_string()];
    sans.extend(addresses.iter().cloned());

    if let (Some(ca), Some(cc), Some(ck), Some(sc), Some(sk)) = (
        read(dir, CA_FILE),
        read(dir, CLIENT_CERT_FILE),
        read(dir, CLIENT_KEY_FILE),
        read(dir, SERVING_CERT_FILE),
        read(dir, SERVING_KEY_FILE),
    ) {
        if sha256_hex(ca.as_bytes()) == want_hash
            && cert_ok(&cc, Some(&cn), &[])
            && cert_ok(&sc, None, &sans)
        {
            skiff_pki::write_kubeconfig(&kubeconfig, server_url, &ca, &cc, &ck, "default")?;
            return Ok(NodeCredentials {
                ca_pem: ca,
                client_cert_pem: cc,
                client_key_pem: ck,
                serving_cert_pem: sc,
                serving_key_pem: sk,
                kubeconfig,
            });
        }
    }

    let (status, ca) = https(
        server_url,
        insecure_tls(),
        http::Method::GET,
        "/cacerts",
        None,
        None,
    )
    .await
    .context("fetching the cluster CA")?;
    if status != 200 {
        bail!("fetching the cluster CA from {server_url}: HTTP {status}");
    }
    let ca = String::from_utf8(ca.to_vec()).context("the cluster CA is not text")?;
    if sha256_hex(ca.as_bytes()) != want_hash {
        bail!(
            "the cluster CA from {server_url} does not match the token's CA hash: refusing to join"
        );
    }
    let verified = skiff_pki::client_tls_config(&ca, None)?;
    let body = serde_json::to_vec(&serde_json::json!({
        "nodeName": node_name,
        "addresses": addresses,
    }))?;
    let (status, resp) = https(
        server_url,
        verified,
        http::Method::POST,
        "/skiff/v1/node-certificate",
        Some(token.trim()),
        Some(body),
    )
    .await
    .context("requesting the node certificates")?;
    if status != 200 {
        let msg = serde_json::from_slice::<serde_json::Value>(&resp)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&resp).into_owned());
        bail!("the server refused the node certificate request (HTTP {status}): {msg}");
    }
    let v: serde_json::Value =
        serde_json::from_slice(&resp).context("decoding the node certificates")?;
    let field = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the server's answer lacks {k}"))
    };
    let creds = NodeCredentials {
        ca_pem: ca,
        client_cert_pem: field("clientCert")?,
        client_key_pem: field("clientKey")?,
        serving_cert_pem: field("servingCert")?,
        serving_key_pem: field("servingKey")?,
        kubeconfig,
    };
    write_private(&dir.join(CA_FILE), &creds.ca_pem)?;
    write_private(&dir.join(CLIENT_CERT_FILE), &creds.client_cert_pem)?;
    write_private(&dir.join(CLIENT_KEY_FILE), &creds.client_key_pem)?;
    write_private(&dir.join(SERVING_CERT_FILE), &creds.serving_cert_pem)?;
    write_private(&dir.join(SERVING_KEY_FILE), &creds.serving_key_pem)?;
    skiff_pki::write_kubeconfig(
        &creds.kubeconfig,
        server_url,
        &creds.ca_pem,
        &creds.client_cert_pem,
        &creds.client_key_pem,
        "default",
    )?;
    tracing::info!(node = node_name, dir = %dir.display(), "obtained node certificates");
    Ok(creds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_required() {
        let h = sha256_hex(b"x");
        assert_eq!(token_ca_hash(&format!("K10{h}::server:abc")).unwrap(), h);
        assert!(token_ca_hash("abc").is_err());
        assert!(token_ca_hash("K10abc::server:x").is_err());
    }
}
