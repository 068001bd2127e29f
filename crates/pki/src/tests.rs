//! Tests of the PKI files, issued certificates and real TLS handshakes.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};
use x509_parser::extensions::GeneralName;

use crate::*;

fn opts() -> PkiOptions {
    PkiOptions {
        host_name: "node-a".to_string(),
        host_addresses: vec!["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()],
        extra_sans: vec!["api.example.com".to_string(), "203.0.113.9".to_string()],
    }
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn sans_of(pem: &str) -> HashSet<String> {
    let der = der(pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let ext = cert.subject_alternative_name().unwrap().unwrap();
    ext.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string()
            }
            GeneralName::IPAddress(b) => {
                IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string()
            }
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

const ALL_FILES: [&str; 6] = [
    CA_CERT_FILE,
    CA_KEY_FILE,
    SERVER_CERT_FILE,
    SERVER_KEY_FILE,
    ADMIN_CERT_FILE,
    ADMIN_KEY_FILE,
];

#[test]
fn first_start_writes_every_file_with_private_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let pki = ensure(&dir, &opts()).unwrap();
    assert_eq!(mode(&dir), 0o700);
    for file in ALL_FILES {
        let expected = if file.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode(&dir.join(file)), expected, "{file}");
    }
    assert_eq!(read(&dir, CA_CERT_FILE), pki.ca_cert_pem().as_bytes());
    assert_eq!(read(&dir, SERVER_KEY_FILE), pki.server_key_pem().as_bytes());
    assert_eq!(read(&dir, ADMIN_CERT_FILE), pki.admin_cert_pem().as_bytes());
    assert_eq!(pki.dir(), dir);

    let ca_der = pki.ca_cert_der().clone();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca.is_ca());
    let cn = ca
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap();
    let stamp: u64 = cn.strip_prefix("skiff-ca@").unwrap().parse().unwrap();
    assert!(stamp > 1_600_000_000);
    let lifetime = ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp();
    assert!(lifetime >= CA_VALIDITY.as_secs() as i64, "{lifetime}");
}

#[test]
fn restart_reuses_files_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &opts()).unwrap();
    let before: Vec<Vec<u8>> = ALL_FILES.iter().map(|f| read(tmp.path(), f)).collect();
    let pki = ensure(tmp.path(), &opts()).unwrap();
    let after: Vec<Vec<u8>> = ALL_FILES.iter().map(|f| read(tmp.path(), f)).collect();
    assert_eq!(before, after);
    assert_eq!(pki.server_cert_pem().as_bytes(), &before[2][..]);
    // Fewer SANs than the certificate has is no reason to reissue either.
    ensure(tmp.path(), &PkiOptions::default()).unwrap();
    assert_eq!(read(tmp.path(), SERVER_CERT_FILE), before[2]);
}

#[test]
fn serving_cert_carries_every_san() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &opts()).unwrap();
    let sans = sans_of(pki.server_cert_pem());
    for want in [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "127.0.0.1",
        "::1",
        "10.43.0.1",
        "node-a",
        "192.0.2.7",
        "2001:db8::7",
        "api.example.com",
        "203.0.113.9",
    ] {
        assert!(sans.contains(want), "{want} missing from {sans:?}");
        assert!(pki.server_sans().iter().any(|s| s == want), "{want}");
    }
    assert_eq!(sans.len(), 13);
}

#[test]
fn a_missing_san_reissues_only_the_serving_cert() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &opts()).unwrap();
    let before: Vec<Vec<u8>> = ALL_FILES.iter().map(|f| read(tmp.path(), f)).collect();
    let mut more = opts();
    more.extra_sans.push("new.example.com".to_string());
    let pki = ensure(tmp.path(), &more).unwrap();
    let after: Vec<Vec<u8>> = ALL_FILES.iter().map(|f| read(tmp.path(), f)).collect();
    for (i, file) in ALL_FILES.iter().enumerate() {
        if *file == SERVER_CERT_FILE {
            assert_ne!(before[i], after[i]);
        } else {
            assert_eq!(before[i], after[i], "{file} changed");
        }
    }
    assert!(sans_of(pki.server_cert_pem()).contains("new.example.com"));
}

#[test]
fn certificates_not_from_the_ca_are_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &opts()).unwrap();
    ensure(other.path(), &opts()).unwrap();
    for file in [
        SERVER_CERT_FILE,
        SERVER_KEY_FILE,
        ADMIN_CERT_FILE,
        ADMIN_KEY_FILE,
    ] {
        std::fs::copy(other.path().join(file), tmp.path().join(file)).unwrap();
    }
    let pki = ensure(tmp.path(), &opts()).unwrap();
    assert_ne!(
        read(tmp.path(), SERVER_CERT_FILE),
        read(other.path(), SERVER_CERT_FILE)
    );
    assert_ne!(
        read(tmp.path(), ADMIN_CERT_FILE),
        read(other.path(), ADMIN_CERT_FILE)
    );
    // A still valid key is kept.
    assert_eq!(
        read(tmp.path(), SERVER_KEY_FILE),
        read(other.path(), SERVER_KEY_FILE)
    );
    handshake_ok(&pki, Some((pki.admin_cert_pem(), pki.admin_key_pem())));
}

#[test]
fn ca_cert_without_key_is_refused_and_mismatched_key_detected() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &opts()).unwrap();
    let other = tempfile::tempdir().unwrap();
    ensure(other.path(), &opts()).unwrap();

    std::fs::copy(other.path().join(CA_KEY_FILE), tmp.path().join(CA_KEY_FILE)).unwrap();
    let err = ensure(tmp.path(), &opts()).unwrap_err();
    assert!(matches!(err, Error::CaKeyMismatch { .. }), "{err}");

    std::fs::remove_file(tmp.path().join(CA_KEY_FILE)).unwrap();
    let err = ensure(tmp.path(), &opts()).unwrap_err();
    assert!(matches!(err, Error::CaKeyMissing { .. }), "{err}");
    assert!(
        err.to_string().contains("refusing to replace the CA"),
        "{err}"
    );
}

#[test]
fn invalid_extra_san_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.extra_sans.push("bad name".to_string());
    let err = ensure(tmp.path(), &o).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid subject alternative name \"bad name\""
    );
}

#[test]
fn admin_cert_is_system_admin_in_system_masters() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &opts()).unwrap();
    let user = identity_from_cert(&der(pki.admin_cert_pem())).unwrap();
    assert_eq!(
        user,
        UserInfo {
            name: "system:admin".to_string(),
            uid: String::new(),
            groups: vec![
                "system:masters".to_string(),
                "system:authenticated".to_string()
            ],
        }
    );
}

#[test]
fn issued_client_certs_name_users_and_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &opts()).unwrap();
    let day = Duration::from_secs(86_400);

    let (cert, key) = pki
        .issue_client_cert("system:node:n1", &["system:nodes"], day)
        .unwrap();
    assert!(key.contains("PRIVATE KEY"));
    let user = identity_from_cert(&der(&cert)).unwrap();
    assert_eq!(user.name, "system:node:n1");
    assert_eq!(user.groups, ["system:nodes", "system:authenticated"]);
    let d = der(&cert);
    let (_, x) = x509_parser::parse_x509_certificate(&d).unwrap();
    let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
    assert!((86_400..=86_400 + 600).contains(&life), "{life}");

    let (cert, _) = pki.issue_client_cert("jane", &["dev", "ops"], day).unwrap();
    assert_eq!(
        identity_from_cert(&der(&cert)).unwrap().groups,
        ["dev", "ops", "system:authenticated"]
    );

    let (cert, _) = pki.issue_client_cert("nobody", &[], day).unwrap();
    assert_eq!(
        identity_from_cert(&der(&cert)).unwrap().groups,
        ["system:authenticated"]
    );

    assert!(pki.issue_client_cert("x", &["a", "b", "c"], day).is_err());

    // Two issues with the same subject get distinct serials.
    let (a, _) = pki.issue_client_cert("jane", &[], day).unwrap();
    let (b, _) = pki.issue_client_cert("jane", &[], day).unwrap();
    let (da, db) = (der(&a), der(&b));
    let sa = x509_parser::parse_x509_certificate(&da)
        .unwrap()
        .1
        .serial
        .clone();
    let sb = x509_parser::parse_x509_certificate(&db)
        .unwrap()
        .1
        .serial
        .clone();
    assert_ne!(sa, sb);
}

#[test]
fn certificates_without_common_name_name_nobody() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:masters");
    let cert = params.self_signed(&key).unwrap();
    assert_eq!(identity_from_cert(cert.der()), None);
    assert_eq!(identity_from_cert(b"not der"), None);
}

/// What the server saw of one connection.
#[derive(Debug)]
struct Seen {
    peer: Option<Vec<CertificateDer<'static>>>,
    alpn: Option<Vec<u8>>,
    version: Option<rustls::ProtocolVersion>,
}

/// Runs one TLS connection over loopback: the client sends "ping", the
/// server answers "pong". Socket timeouts bound every wait.
fn connect(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> (Result<Seen, String>, Result<(), String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let timeout = Some(Duration::from_secs(10));
    let server = std::thread::spawn(move || -> Result<Seen, String> {
        let (sock, _) = listener.accept().map_err(|e| e.to_string())?;
        sock.set_read_timeout(timeout).unwrap();
        sock.set_write_timeout(timeout).unwrap();
        let conn = ServerConnection::new(server).map_err(|e| e.to_string())?;
        let mut tls = StreamOwned::new(conn, sock);
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"ping");
        tls.write_all(b"pong").map_err(|e| e.to_string())?;
        tls.flush().map_err(|e| e.to_string())?;
        Ok(Seen {
            peer: tls.conn.peer_certificates().map(|c| c.to_vec()),
            alpn: tls.conn.alpn_protocol().map(|p| p.to_vec()),
            version: tls.conn.protocol_version(),
        })
    });
    let client_result = (|| -> Result<(), String> {
        let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        sock.set_read_timeout(timeout).unwrap();
        sock.set_write_timeout(timeout).unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        let conn = ClientConnection::new(client, name).map_err(|e| e.to_string())?;
        let mut tls = StreamOwned::new(conn, sock);
        tls.write_all(b"ping").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
        if &buf != b"pong" {
            return Err(format!("unexpected reply {buf:?}"));
        }
        Ok(())
    })();
    (server.join().unwrap(), client_result)
}

fn handshake_ok(pki: &Pki, identity: Option<(&str, &str)>) -> Seen {
    let client = client_tls_config(pki.ca_cert_pem(), identity).unwrap();
    let (server, client) = connect(server_tls_config(pki).unwrap(), client, "localhost");
    client.unwrap();
    server.unwrap()
}

#[test]
fn tls_with_admin_cert_identifies_the_admin() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &opts()).unwrap();
    let seen = handshake_ok(&pki, Some((pki.admin_cert_pem(), pki.admin_key_pem())));
    let peer = seen.peer.expect("server saw no client certificate");
    assert_eq!(peer[0], der(pki.admin_cert_pem()));
    assert_eq!(identity_from_cert(&peer[0]).unwrap().name, "system:admin");
    assert_eq!(seen.version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(seen.alpn, None);
}

#[test]
fn tls12_client_cert_and_alpn_over_ip_address() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &opts()).unwrap();
    let (cert, key) = pki
        .issue_client_cert(
            "system:node:n1",
            &["system:nodes"],
            Duration::from_secs(3600),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(pki.ca_cert_pem())).unwrap();
    let mut client =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![der(&cert)],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap();
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let (server, client) = connect(
        server_tls_config(&pki).unwrap(),
        Arc::new(client),
        "127.0.0.1",
    );
    client.unwrap();
    let seen = server.unwrap();
    assert_eq!(seen.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
    let user = identity_from_cert(&seen.peer.unwrap()[0]).unwrap();
    assert_eq!(user.name, "system:node:n1");
    assert_eq!(user.groups, ["system:nodes", "system:authenticated"]);
}

#[test]
fn tls_without_client_cert_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &opts()).unwrap();
    let seen = handshake_ok(&pki, None);
    assert!(seen.peer.is_none());
}

#[test]
fn tls_client_cert_from_another_ca_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &opts()).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = ensure(other_dir.path(), &opts()).unwrap();
    let client = client_tls_config(
        pki.ca_cert_pem(),
        Some((other.admin_cert_pem(), other.admin_key_pem())),
    )
    .unwrap();
    let (server, client) = connect(server_tls_config(&pki).unwrap(), client, "localhost");
    let server_err = server.expect_err("server accepted a foreign client certificate");
    // Two CAs made in the same second share a name, so webpki may report a bad
    // signature rather than an unknown issuer; either way the chain fails.
    assert!(
        server_err.contains("invalid peer certificate"),
        "{server_err}"
    );
    assert!(client.is_err());
}

#[test]
fn tls_client_rejects_server_of_another_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &opts()).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = ensure(other_dir.path(), &opts()).unwrap();
    let client = client_tls_config(other.ca_cert_pem(), None).unwrap();
    let (server, client) = connect(server_tls_config(&pki).unwrap(), client, "localhost");
    let client_err = client.expect_err("client trusted a foreign server");
    assert!(
        client_err.contains("invalid peer certificate"),
        "{client_err}"
    );
    assert!(server.is_err());
}

#[test]
fn ensure_is_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let start = Instant::now();
    ensure(tmp.path(), &opts()).unwrap();
    let first = start.elapsed();
    let start = Instant::now();
    let pki = ensure(tmp.path(), &opts()).unwrap();
    let reuse = start.elapsed();
    let start = Instant::now();
    server_tls_config(&pki).unwrap();
    let tls = start.elapsed();
    eprintln!("ensure: first start {first:?}, reuse {reuse:?}; server_tls_config {tls:?}");
    assert!(
        reuse + tls < Duration::from_millis(150),
        "reuse {reuse:?}, tls {tls:?}"
    );
}

#[test]
fn certificates_near_expiry_are_renewed() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &opts()).unwrap();
    let ca_before = read(tmp.path(), CA_CERT_FILE);
    // Valid, from the CA, with every SAN, but expiring within 90 days.
    let (cert, key) = pki
        .issue_server_cert("skiff", pki.server_sans(), Duration::from_secs(30 * 86_400))
        .unwrap();
    std::fs::write(tmp.path().join(SERVER_CERT_FILE), &cert).unwrap();
    std::fs::write(tmp.path().join(SERVER_KEY_FILE), &key).unwrap();
    let pki = ensure(tmp.path(), &opts()).unwrap();
    assert_ne!(pki.server_cert_pem(), cert);
    assert_eq!(pki.server_key_pem(), key);
    let d = der(pki.server_cert_pem());
    let (_, x) = x509_parser::parse_x509_certificate(&d).unwrap();
    let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
    assert!(life >= LEAF_VALIDITY.as_secs() as i64, "{life}");
    assert_eq!(read(tmp.path(), CA_CERT_FILE), ca_before);
}

#[test]
fn admin_kubeconfig_embeds_the_admin_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(&tmp.path().join("tls"), &opts()).unwrap();
    let path = tmp.path().join("kubeconfig.yaml");
    pki.write_admin_kubeconfig(&path, "https://127.0.0.1:6443")
        .unwrap();
    assert_eq!(mode(&path), 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert!(text.contains(&format!(
        "certificate-authority-data: {}\n",
        b64(pki.ca_cert_pem())
    )));
    assert!(text.contains(&format!(
        "client-certificate-data: {}\n",
        b64(pki.admin_cert_pem())
    )));
    assert!(text.contains(&format!("client-key-data: {}\n", b64(pki.admin_key_pem()))));
    assert!(text.contains("current-context: default\n"));
}

#[test]
fn shared_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Pki>();
    check::<TokenFile>();
    check::<UserInfo>();
    check::<Error>();
}
