//! Subject alternative names of the API server's serving certificate.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rcgen::SanType;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::error::{Error, Result};
use crate::pki::{PkiOptions, KUBERNETES_SERVICE_IP};

/// DNS names every serving certificate carries.
const FIXED_DNS_SANS: [&str; 5] = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum San {
    Dns(String),
    Ip(IpAddr),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(d) => f.write_str(d),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl San {
    pub(crate) fn parse(s: &str) -> Result<San> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        let valid = !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'));
        if valid {
            Ok(San::Dns(s.to_ascii_lowercase()))
        } else {
            Err(Error::InvalidSan(s.to_string()))
        }
    }

    pub(crate) fn to_rcgen(&self) -> Result<SanType> {
        Ok(match self {
            San::Dns(d) => SanType::DnsName(d.as_str().try_into()?),
            San::Ip(ip) => SanType::IpAddress(*ip),
        })
    }
}

/// The SANs the API server's certificate needs, fixed ones first, without duplicates.
pub(crate) fn required_sans(opts: &PkiOptions) -> Result<Vec<San>> {
    let mut sans: Vec<San> = FIXED_DNS_SANS
        .iter()
        .map(|d| San::Dns(d.to_string()))
        .collect();
    sans.extend([
        San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        San::Ip(KUBERNETES_SERVICE_IP),
    ]);
    if !opts.host_name.trim().is_empty() {
        match San::parse(&opts.host_name) {
            Ok(san) => sans.push(san),
            // A host name that cannot be a DNS name cannot be dialled either.
            Err(_) => {
                tracing::warn!(host = %opts.host_name, "host name left out of the serving certificate")
            }
        }
    }
    sans.extend(opts.host_addresses.iter().map(|ip| San::Ip(*ip)));
    for extra in &opts.extra_sans {
        sans.push(San::parse(extra)?);
    }
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    Ok(sans)
}

/// The DNS and IP SANs a certificate carries.
pub(crate) fn cert_sans(cert: &X509Certificate<'_>) -> Vec<San> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(San::Dns(d.to_ascii_lowercase())),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| San::Ip(IpAddr::from(a))),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| San::Ip(IpAddr::from(a))),
                _ => None,
            },
            _ => None,
        })
        .collect()
}
