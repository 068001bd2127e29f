//! The cluster CA and the certificates issued from it (`<data-dir>/tls/`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;

use crate::error::{Error, Result};
use crate::fsutil::{self, PRIVATE, PUBLIC};
use crate::host::host_identity;
use crate::issue::{at, issue, random_serial, secs, unix_now, LeafSpec, BACKDATE};
use crate::sans::{cert_sans, required_sans, San};

/// File name of the CA certificate.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the API server's serving certificate.
pub const SERVER_CERT_FILE: &str = "server.crt";
/// File name of the API server's serving key.
pub const SERVER_KEY_FILE: &str = "server.key";
/// File name of the admin client certificate.
pub const ADMIN_CERT_FILE: &str = "admin.crt";
/// File name of the admin client key.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// Cluster IP of the `kubernetes` service (first address of 10.43.0.0/16).
pub const KUBERNETES_SERVICE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 43, 0, 1));
/// Common name of the admin client certificate.
pub const ADMIN_USER: &str = "system:admin";
/// Group of the admin client certificate, bound to `cluster-admin` by upstream's default RBAC.
pub const ADMIN_GROUP: &str = "system:masters";

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// CA lifetime, as k3s.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Lifetime of the serving and admin certificates, as k3s.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Certificates closer than this to expiry are renewed on start, as k3s does.
const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// What the serving certificate must cover besides the fixed names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkiOptions {
    /// The host name; empty to leave it out.
    pub host_name: String,
    /// Addresses of the host that clients may dial.
    pub host_addresses: Vec<IpAddr>,
    /// Further SANs (`--tls-san`): IP addresses or DNS names.
    pub extra_sans: Vec<String>,
}

impl PkiOptions {
    /// Options for this machine (see [`host_identity`]) plus `extra_sans`.
    pub fn for_this_host(extra_sans: Vec<String>) -> Self {
        let (host_name, host_addresses) = host_identity();
        PkiOptions {
            host_name,
            host_addresses,
            extra_sans,
        }
    }
}

/// The cluster PKI: the CA (with its key, to issue more certificates), the
/// API server's serving certificate and the admin client certificate.
pub struct Pki {
    dir: PathBuf,
    ca_cert_pem: String,
    ca_cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    server_cert_pem: String,
    server_key_pem: String,
    server_sans: Vec<String>,
    admin_cert_pem: String,
    admin_key_pem: String,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("server_sans", &self.server_sans)
            .finish_non_exhaustive()
    }
}

/// Loads the PKI under `dir` (normally `<data-dir>/tls`), creating what is
/// missing: the CA on first start, the serving certificate when it lacks a SAN
/// from `opts`, is not from the CA, or expires within 90 days, and the admin
/// certificate under the same conditions. Existing valid files are reused
/// unchanged; the CA is never replaced once its certificate exists.
pub fn ensure(dir: &Path, opts: &PkiOptions) -> Result<Pki> {
    fsutil::create_private_dir(dir)?;
    let now = unix_now();
    let sans = required_sans(opts)?;

    let (ca_cert_pem, ca_cert_der, ca_key) = load_or_create_ca(dir, now)?;
    let (_, ca_x509) = x509_parser::parse_x509_certificate(&ca_cert_der)
        .map_err(|e| Error::parse(dir.join(CA_CERT_FILE), e))?;
    let ca = CaView {
        x509: &ca_x509,
        issuer: Issuer::from_ca_cert_der(&ca_cert_der, ca_key)?,
    };

    let (server_cert_pem, server_key_pem) = ensure_leaf(
        dir,
        SERVER_CERT_FILE,
        SERVER_KEY_FILE,
        &ca,
        now,
        |cert| {
            let have = cert_sans(cert);
            match sans.iter().find(|s| !have.contains(s)) {
                Some(missing) => Err(format!("SAN {missing} missing")),
                None => Ok(()),
            }
        },
        |key| {
            issue(
                &ca.issuer,
                key,
                &LeafSpec {
                    cn: "skiff",
                    orgs: &["skiff"],
                    sans: &sans,
                    usage: ExtendedKeyUsagePurpose::ServerAuth,
                    validity: LEAF_VALIDITY,
                },
                now,
            )
        },
    )?;

    let (admin_cert_pem, admin_key_pem) = ensure_leaf(
        dir,
        ADMIN_CERT_FILE,
        ADMIN_KEY_FILE,
        &ca,
        now,
        |cert| match crate::identity::identity_from_x509(cert) {
            Some(u) if u.name == ADMIN_USER && u.groups.iter().any(|g| g == ADMIN_GROUP) => Ok(()),
            _ => Err(format!("subject is not {ADMIN_USER} in {ADMIN_GROUP}")),
        },
        |key| {
            issue(
                &ca.issuer,
                key,
                &LeafSpec {
                    cn: ADMIN_USER,
                    orgs: &[ADMIN_GROUP],
                    sans: &[],
                    usage: ExtendedKeyUsagePurpose::ClientAuth,
                    validity: LEAF_VALIDITY,
                },
                now,
            )
        },
    )?;

    let CaView { issuer, .. } = ca;
    Ok(Pki {
        dir: dir.to_path_buf(),
        ca_cert_pem,
        ca_cert_der,
        issuer,
        server_cert_pem,
        server_key_pem,
        server_sans: sans.iter().map(San::to_string).collect(),
        admin_cert_pem,
        admin_key_pem,
    })
}

impl Pki {
    /// The directory holding the PKI files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The CA certificate, DER.
    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        &self.ca_cert_der
    }

    /// The API server's serving certificate, PEM.
    pub fn server_cert_pem(&self) -> &str {
        &self.server_cert_pem
    }

    /// The API server's serving key, PEM (PKCS#8).
    pub fn server_key_pem(&self) -> &str {
        &self.server_key_pem
    }

    /// The SANs the serving certificate was required to carry.
    pub fn server_sans(&self) -> &[String] {
        &self.server_sans
    }

    /// The admin client certificate (`system:admin` in `system:masters`), PEM.
    pub fn admin_cert_pem(&self) -> &str {
        &self.admin_cert_pem
    }

    /// The admin client key, PEM (PKCS#8).
    pub fn admin_key_pem(&self) -> &str {
        &self.admin_key_pem
    }

    /// Writes the admin kubeconfig (cluster, user and context `default`, as
    /// k3s's `k3s.yaml`) for `server_url` to `path`, mode 0600.
    pub fn write_admin_kubeconfig(&self, path: &Path, server_url: &str) -> Result<()> {
        crate::kubeconfig::write_kubeconfig(
            path,
            server_url,
            &self.ca_cert_pem,
            &self.admin_cert_pem,
            &self.admin_key_pem,
            "default",
        )
    }

    /// Issues a client certificate with a fresh ECDSA P-256 key: `cn` becomes
    /// the user name and `orgs` the groups (at most two, see below), e.g.
    /// `system:node:<name>` in `system:nodes`. Returns `(cert_pem, key_pem)`.
    ///
    /// rcgen cannot repeat an attribute type in a subject, so the second
    /// organization is written under the same OID through a custom attribute;
    /// more than two organizations are refused.
    pub fn issue_client_cert(
        &self,
        cn: &str,
        orgs: &[&str],
        validity: Duration,
    ) -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let cert = issue(
            &self.issuer,
            &key,
            &LeafSpec {
                cn,
                orgs,
                sans: &[],
                usage: ExtendedKeyUsagePurpose::ClientAuth,
                validity,
            },
            unix_now(),
        )?;
        Ok((cert, key.serialize_pem()))
    }

    /// Issues a serving certificate for `sans` (IP addresses or DNS names)
    /// with a fresh key, e.g. for a node agent's port 10250. Returns
    /// `(cert_pem, key_pem)`.
    pub fn issue_server_cert(
        &self,
        cn: &str,
        sans: &[String],
        validity: Duration,
    ) -> Result<(String, String)> {
        let sans = sans
            .iter()
            .map(|s| San::parse(s))
            .collect::<Result<Vec<_>>>()?;
        let key = KeyPair::generate()?;
        let cert = issue(
            &self.issuer,
            &key,
            &LeafSpec {
                cn,
                orgs: &[],
                sans: &sans,
                usage: ExtendedKeyUsagePurpose::ServerAuth,
                validity,
            },
            unix_now(),
        )?;
        Ok((cert, key.serialize_pem()))
    }
}

struct CaView<'a> {
    x509: &'a X509Certificate<'a>,
    issuer: Issuer<'static, KeyPair>,
}

fn pem_to_der(pem: &str, path: &Path) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::parse(path, e))
}

fn load_or_create_ca(dir: &Path, now: i64) -> Result<(String, CertificateDer<'static>, KeyPair)> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    if let Some(cert_pem) = fsutil::read_optional(&cert_path)? {
        let key_pem = fsutil::read_optional(&key_path)?.ok_or_else(|| Error::CaKeyMissing {
            cert: cert_path.clone(),
            key: key_path.clone(),
        })?;
        let der = pem_to_der(&cert_pem, &cert_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::parse(&key_path, e))?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| Error::parse(&cert_path, e))?;
        if x509.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(Error::CaKeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        if x509.validity().not_after.timestamp() < now {
            tracing::warn!(path = %cert_path.display(), "cluster CA has expired");
        }
        return Ok((cert_pem, der, key));
    }

    // No certificate means nobody can trust this CA yet, so a stray key from
    // an interrupted first start may be replaced.
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("skiff-ca@{now}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.serial_number = Some(random_serial()?);
    params.not_before = at(now - secs(BACKDATE))?;
    params.not_after = at(now + secs(CA_VALIDITY))?;
    let cert = params.self_signed(&key)?;
    let cert_pem = cert.pem();
    fsutil::write_atomic(&key_path, key.serialize_pem().as_bytes(), PRIVATE)?;
    fsutil::write_atomic(&cert_path, cert_pem.as_bytes(), PUBLIC)?;
    tracing::info!(path = %cert_path.display(), "generated cluster CA");
    Ok((cert_pem, cert.der().clone(), key))
}

/// Reuses the certificate and key at `cert_file`/`key_file` if they are
/// issued by the CA, match each other, are not about to expire and pass
/// `check`; otherwise issues a new certificate with `make` (keeping a valid
/// existing key) and writes both.
fn ensure_leaf(
    dir: &Path,
    cert_file: &str,
    key_file: &str,
    ca: &CaView<'_>,
    now: i64,
    check: impl Fn(&X509Certificate<'_>) -> Result<(), String>,
    make: impl Fn(&KeyPair) -> Result<String>,
) -> Result<(String, String)> {
    let cert_path = dir.join(cert_file);
    let key_path = dir.join(key_file);
    let cert_pem = fsutil::read_optional(&cert_path)?;
    let key_pem = fsutil::read_optional(&key_path)?;
    let key = key_pem.as_deref().and_then(|p| KeyPair::from_pem(p).ok());

    let reason = match (&cert_pem, &key) {
        (Some(cert_pem), Some(key)) => match reusable(cert_pem, key, ca, now, &check) {
            Ok(()) => {
                let key_pem = key_pem.unwrap_or_default();
                return Ok((cert_pem.clone(), key_pem));
            }
            Err(reason) => reason,
        },
        (None, _) => "missing".to_string(),
        (_, None) => "key missing or unreadable".to_string(),
    };

    let (key, key_pem) = match (key, key_pem) {
        (Some(key), Some(pem)) => (key, pem),
        _ => {
            let key = KeyPair::generate()?;
            let pem = key.serialize_pem();
            fsutil::write_atomic(&key_path, pem.as_bytes(), PRIVATE)?;
            (key, pem)
        }
    };
    let cert_pem = make(&key)?;
    fsutil::write_atomic(&cert_path, cert_pem.as_bytes(), PUBLIC)?;
    tracing::info!(path = %cert_path.display(), %reason, "issued certificate");
    Ok((cert_pem, key_pem))
}

fn reusable(
    cert_pem: &str,
    key: &KeyPair,
    ca: &CaView<'_>,
    now: i64,
    check: &impl Fn(&X509Certificate<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    if cert.issuer().as_raw() != ca.x509.subject().as_raw()
        || cert.verify_signature(Some(ca.x509.public_key())).is_err()
    {
        return Err("not issued by the cluster CA".to_string());
    }
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err("key does not match certificate".to_string());
    }
    if cert.validity().not_after.timestamp() - now < secs(RENEW_BEFORE) {
        return Err(format!(
            "expires within {} days",
            RENEW_BEFORE.as_secs() / DAY.as_secs()
        ));
    }
    check(&cert)
}
