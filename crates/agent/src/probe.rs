//! Container probes (exec through CRI `ExecSync`, httpGet, tcpSocket, grpc) with upstream's
//! timing fields; each probe of a running container is a task writing its latest result.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::runtime::Runtime;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }
}

/// Results by (container ID, kind): `Some(true)` success, `Some(false)` failure, absent: none yet.
pub type Results = Arc<Mutex<HashMap<(String, Kind), bool>>>;

/// One probe attempt: Ok(()) on success, Err(output) on failure.
pub async fn probe_once(
    rt: &Runtime,
    probe: &Probe,
    container: &Container,
    container_id: &str,
    pod_ip: &str,
) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let port_of = |p: &IntOrString| -> Result<u16, String> {
        match p {
            IntOrString::Int(i) => Ok(*i as u16),
            IntOrString::String(name) => container
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name))
                .map(|cp| cp.container_port as u16)
                .ok_or_else(|| format!("unable to find port {name}")),
        }
    };
    let fut = async {
        if let Some(e) = &probe.exec {
            let r = rt
                .cri()
                .exec_sync(k8s_cri::v1::ExecSyncRequest {
                    container_id: container_id.into(),
                    cmd: e.command.clone().unwrap_or_default(),
                    timeout: timeout.as_secs() as i64,
                })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            if r.exit_code == 0 {
                return Ok(());
            }
            let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
            out.push_str(&String::from_utf8_lossy(&r.stderr));
            return Err(out);
        }
        if let Some(h) = &probe.http_get {
            let host = h
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_string());
            let port = port_of(&h.port)?;
            return http_get(
                &host,
                port,
                h.path.as_deref().unwrap_or("/"),
                h.http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
                h.scheme.as_deref() == Some("HTTPS"),
            )
            .await;
        }
        if let Some(t) = &probe.tcp_socket {
            let host = t
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_string());
            let port = port_of(&t.port)?;
            return tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map(|_| ())
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"));
        }
        if let Some(g) = &probe.grpc {
            return grpc_check(pod_ip, g.port as u16, g.service.clone().unwrap_or_default()).await;
        }
        Err("probe has no handler".into())
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe timed out after {}s", timeout.as_secs())),
    }
}

/// An HTTP/1.1 GET over plain TCP or (with `https`) TLS without certificate verification, as
/// upstream's prober does; 2xx and 3xx are success.
pub async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: Vec<(String, String)>,
    https: bool,
) -> Result<(), String> {
    let addr = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => format!("[{a}]:{port}"),
        _ => format!("{host}:{port}"),
    };
    let scheme = if https { "https" } else { "http" };
    let url = format!("{scheme}://{addr}{path}");
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let head = if https {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(insecure_tls())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        exchange(tls, &req).await?
    } else {
        exchange(tcp, &req).await?
    };
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response from {addr}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Sends `req` and returns the start of the response (enough for the status line).
async fn exchange<S>(mut s: S, req: &str) -> Result<String, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1024];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The TLS client configuration of HTTPS probes and hooks: upstream's prober sets
/// `InsecureSkipVerify`, since pods serve certificates the node cannot know.
fn insecure_tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Accepts any server certificate but still checks the handshake signatures.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `grpc.health.v1.Health/Check`; SERVING (1) is success.
async fn grpc_check(ip: &str, port: u16, service: String) -> Result<(), String> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{ip}:{port}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("failed to connect service \"{ip}:{port}\" within 1s: {e}"))?;
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let r = grpc
        .unary(
            tonic::Request::new(HealthCheckRequest { service }),
            path,
            codec,
        )
        .await
        .map_err(|e| format!("rpc error: code = {:?} desc = {}", e.code(), e.message()))?;
    match r.into_inner().status {
        1 => Ok(()),
        s => Err(format!(
            "service unhealthy (responded with \"{}\")",
            match s {
                2 => "NOT_SERVING",
                3 => "SERVICE_UNKNOWN",
                _ => "UNKNOWN",
            }
        )),
    }
}

/// Runs one probe of one container until aborted: waits `initialDelaySeconds`, then probes every
/// `periodSeconds`, flipping the result after `successThreshold`/`failureThreshold` consecutive
/// outcomes. Calls `on_change` whenever the result changes, and `on_failure` with the output of
/// each failed attempt (for Unhealthy events).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    rt: Runtime,
    kind: Kind,
    probe: Probe,
    container: Container,
    container_id: String,
    pod_ip: String,
    results: Results,
    on_change: Arc<tokio::sync::Notify>,
    on_failure: impl Fn(String) + Send,
) {
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
    tokio::time::sleep(Duration::from_secs(
        probe.initial_delay_seconds.unwrap_or(0).max(0) as u64,
    ))
    .await;
    let (mut ok_run, mut fail_run) = (0, 0);
    loop {
        let outcome = probe_once(&rt, &probe, &container, &container_id, &pod_ip).await;
        let key = (container_id.clone(), kind);
        let current = results.lock().expect("probe results").get(&key).copied();
        let mut new = current;
        match outcome {
            Ok(()) => {
                ok_run += 1;
                fail_run = 0;
                if ok_run >= success_threshold
                    || current.is_none() && kind != Kind::Readiness && ok_run >= 1
                {
                    new = Some(true);
                }
            }
            Err(out) => {
                fail_run += 1;
                ok_run = 0;
                on_failure(out);
                if fail_run >= failure_threshold {
                    new = Some(false);
                }
            }
        }
        if new != current {
            if let Some(v) = new {
                results.lock().expect("probe results").insert(key, v);
            }
            on_change.notify_one();
        }
        if kind == Kind::Startup && new == Some(true) {
            return;
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_probe_reads_status() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            for code in [200, 500] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        assert!(http_get("127.0.0.1", port, "/", vec![], false)
            .await
            .is_ok());
        assert_eq!(
            http_get("127.0.0.1", port, "/", vec![], false)
                .await
                .unwrap_err(),
            "HTTP probe failed with statuscode: 500"
        );
    }

    #[tokio::test]
    async fn https_probe_skips_certificate_verification() {
        let cert = rcgen::generate_simple_self_signed(vec!["pod.invalid".into()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            for code in [204, 503] {
                let (tcp, _) = l.accept().await.unwrap();
                let mut s = acceptor.accept(tcp).await.unwrap();
                let mut b = [0u8; 512];
                let n = s.read(&mut b).await.unwrap();
                assert!(String::from_utf8_lossy(&b[..n]).starts_with("GET /healthz HTTP/1.1"));
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
                let _ = s.shutdown().await;
            }
        });
        // The self-signed certificate for another name is accepted, as upstream's prober does.
        http_get("127.0.0.1", port, "/healthz", vec![], true)
            .await
            .unwrap();
        assert_eq!(
            http_get("127.0.0.1", port, "/healthz", vec![], true)
                .await
                .unwrap_err(),
            "HTTP probe failed with statuscode: 503"
        );
        // A port nothing listens on fails.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = l.local_addr().unwrap().port();
        drop(l);
        assert!(http_get("127.0.0.1", plain, "/", vec![], true)
            .await
            .is_err());
    }
}
