//! rustls configurations for the API server and its clients, always on the
//! ring provider (never a process-wide default).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::{Error, Result};
use crate::pki::Pki;

/// ALPN protocols the API server offers, HTTP/2 first as upstream.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

static VERSIONS: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

fn versions() -> &'static [&'static rustls::SupportedProtocolVersion] {
    &VERSIONS
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(what, e))?;
    if certs.is_empty() {
        return Err(Error::invalid(what, "no certificate in PEM"));
    }
    Ok(certs)
}

fn key(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::invalid(what, e))
}

fn roots(ca_pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem, "CA certificate")? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// The API server's TLS configuration: TLS 1.2 and 1.3, ALPN `h2` and
/// `http/1.1`, the serving certificate, and client certificates requested
/// but optional, so bearer-token and anonymous clients still connect while a
/// certificate that does not chain to the cluster CA fails the handshake.
/// Read the verified peer certificate with `ServerConnection::peer_certificates`
/// and map it with [`crate::identity_from_cert`].
pub fn server_tls_config(pki: &Pki) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(pki.ca_cert_pem())?),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(pki.server_cert_pem(), "serving certificate")?,
            key(pki.server_key_pem(), "serving key")?,
        )?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration trusting only the cluster CA in `ca_pem`, with an
/// optional client certificate and key (PEM). No ALPN is set: HTTP clients
/// add what they speak.
pub fn client_tls_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions())?
        .with_root_certificates(roots(ca_pem)?);
    let config = match identity {
        Some((cert_pem, key_pem)) => builder.with_client_auth_cert(
            certs(cert_pem, "client certificate")?,
            key(key_pem, "client key")?,
        )?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
