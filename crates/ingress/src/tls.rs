//! Server certificates chosen by SNI from the served Ingresses' `spec.tls`, with a self-signed
//! fallback for unknown names as ingress-nginx has.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, Context, Result};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::route::normalize_host;

/// The subject of the fallback certificate, ingress-nginx's well-known fake certificate name.
pub const DEFAULT_CERT_CN: &str = "Kubernetes Ingress Controller Fake Certificate";

/// Certificates by host name, from the served Ingresses' TLS sections.
#[derive(Debug, Default)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertTable {
    /// Builds the table from `ingresses` (the served ones, oldest first: the first Ingress to
    /// name a host keeps it). A `tls` entry without hosts covers its Ingress's rule hosts.
    /// Secrets that are missing or do not hold a usable `tls.crt`/`tls.key` are skipped.
    pub fn build(ingresses: &[&Ingress], secrets: &[Secret]) -> Self {
        let mut table = CertTable::default();
        let mut parsed: HashMap<(&str, &str), Option<Arc<CertifiedKey>>> = HashMap::new();
        for ing in ingresses {
            let Some(spec) = &ing.spec else { continue };
            let ns = ing.metadata.namespace.as_deref().unwrap_or("");
            for tls in spec.tls.iter().flatten() {
                let Some(name) = tls.secret_name.as_deref() else {
                    continue;
                };
                let key = parsed
                    .entry((ns, name))
                    .or_insert_with(|| {
                        let secret = secrets.iter().find(|s| {
                            s.metadata.namespace.as_deref() == Some(ns)
                                && s.metadata.name.as_deref() == Some(name)
                        })?;
                        match certified_key(secret) {
                            Ok(k) => Some(k),
                            Err(e) => {
                                tracing::warn!(secret = %format!("{ns}/{name}"), error = %format!("{e:#}"), "unusable tls secret");
                                None
                            }
                        }
                    })
                    .clone();
                let Some(key) = key else { continue };
                let hosts: Vec<String> = match &tls.hosts {
                    Some(h) if !h.is_empty() => h.clone(),
                    _ => spec
                        .rules
                        .iter()
                        .flatten()
                        .filter_map(|r| r.host.clone())
                        .collect(),
                };
                for host in hosts {
                    let host = host.to_ascii_lowercase();
                    let (map, host) = match host.strip_prefix("*.") {
                        Some(suffix) => (&mut table.wildcard, suffix.to_string()),
                        None => (&mut table.exact, host),
                    };
                    map.entry(host).or_insert_with(|| key.clone());
                }
            }
        }
        table
    }

    /// The certificate for `sni`, if an Ingress names it (exactly, or by a one-label wildcard).
    pub fn lookup(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        let host = normalize_host(sni);
        self.exact.get(&host).or_else(|| {
            host.split_once('.')
                .filter(|(label, _)| !label.is_empty())
                .and_then(|(_, rest)| self.wildcard.get(rest))
        })
    }
}

/// Parses a `kubernetes.io/tls` Secret's `tls.crt` chain and `tls.key`.
pub fn certified_key(secret: &Secret) -> Result<Arc<CertifiedKey>> {
    let data = secret.data.as_ref().context("secret has no data")?;
    let crt = data.get("tls.crt").context("secret has no tls.crt")?;
    let key = data.get("tls.key").context("secret has no tls.key")?;
    let chain = CertificateDer::pem_slice_iter(&crt.0)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("parsing tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err(anyhow!("tls.crt holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&key.0).map_err(|e| anyhow!("parsing tls.key: {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow!("loading tls.key: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    // A mismatched pair would fail every handshake; reject it here instead.
    certified
        .keys_match()
        .map_err(|e| anyhow!("tls.crt does not match tls.key: {e}"))?;
    Ok(Arc::new(certified))
}

/// A self-signed certificate for `ingress.local` named like ingress-nginx's fake certificate,
/// served to clients whose SNI no Ingress covers.
pub fn default_certificate() -> Result<Arc<CertifiedKey>> {
    let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, DEFAULT_CERT_CN);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Acme Co");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| anyhow!("{e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| anyhow!("loading default key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

/// The rustls resolver over the current [`CertTable`]; the table is swapped on every change.
#[derive(Debug)]
pub struct CertResolver {
    table: RwLock<Arc<CertTable>>,
    default: Arc<CertifiedKey>,
}

impl CertResolver {
    /// A resolver with an empty table that answers every name with `default`.
    pub fn new(default: Arc<CertifiedKey>) -> Self {
        CertResolver {
            table: RwLock::new(Arc::new(CertTable::default())),
            default,
        }
    }

    /// Replaces the table.
    pub fn set(&self, table: CertTable) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    /// The certificate for a handshake with `sni` (none: the default certificate).
    pub fn choose(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner()).clone();
        sni.and_then(|s| table.lookup(s).cloned())
            .unwrap_or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn secret(name: &str, host: &str) -> Secret {
        let c = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let mut s: Secret = serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "default" },
            "type": "kubernetes.io/tls",
        }))
        .unwrap();
        s.data = Some(
            [
                ("tls.crt".to_string(), ByteString(c.cert.pem().into_bytes())),
                (
                    "tls.key".to_string(),
                    ByteString(c.signing_key.serialize_pem().into_bytes()),
                ),
            ]
            .into(),
        );
        s
    }

    #[test]
    fn certificates_by_sni() {
        let ing: Ingress = serde_json::from_value(json!({
            "metadata": { "name": "x", "namespace": "default" },
            "spec": {
                "tls": [
                    { "hosts": ["a.test"], "secretName": "a" },
                    { "hosts": ["*.w.test"], "secretName": "w" },
                    { "hosts": ["gone.test"], "secretName": "missing" },
                    { "secretName": "r" },
                ],
                "rules": [{ "host": "rule.test" }],
            },
        }))
        .unwrap();
        let secrets = [
            secret("a", "a.test"),
            secret("w", "*.w.test"),
            secret("r", "rule.test"),
        ];
        let table = CertTable::build(&[&ing], &secrets);
        let der = |s: &Secret| {
            CertificateDer::pem_slice_iter(&s.data.as_ref().unwrap()["tls.crt"].0)
                .next()
                .unwrap()
                .unwrap()
        };
        let got = |sni: &str| table.lookup(sni).map(|k| k.cert[0].clone());
        assert_eq!(got("a.test"), Some(der(&secrets[0])));
        assert_eq!(got("A.TEST"), Some(der(&secrets[0])));
        assert_eq!(got("x.w.test"), Some(der(&secrets[1])));
        assert_eq!(got("x.y.w.test"), None);
        assert_eq!(got("rule.test"), Some(der(&secrets[2])));
        assert_eq!(got("gone.test"), None);

        let resolver = CertResolver::new(default_certificate().unwrap());
        resolver.set(table);
        assert_eq!(resolver.choose(Some("a.test")).cert[0], der(&secrets[0]));
        let fallback = resolver.choose(Some("unknown.test"));
        assert_eq!(fallback.cert, resolver.choose(None).cert);
        let cert = x509_cn(&fallback.cert[0]);
        assert!(cert.contains(DEFAULT_CERT_CN), "{cert}");
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let mut s = secret("a", "a.test");
        let other = secret("b", "b.test");
        s.data
            .as_mut()
            .unwrap()
            .insert("tls.key".into(), other.data.unwrap()["tls.key"].clone());
        let err = certified_key(&s).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
    }

    /// The DER certificate's bytes as lossy text: the subject's CN appears verbatim.
    fn x509_cn(der: &CertificateDer<'_>) -> String {
        String::from_utf8_lossy(der.as_ref()).into_owned()
    }
}
