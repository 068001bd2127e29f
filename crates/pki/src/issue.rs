//! Signing leaf certificates with the cluster CA.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::sans::San;

/// `notBefore` is backdated so that nodes with a slightly slow clock accept new certificates.
pub(crate) const BACKDATE: Duration = Duration::from_secs(5 * 60);

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn at(unix: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| Error::invalid("certificate validity", e))
}

pub(crate) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// A random positive 128-bit serial: re-issuing with the same key must not
/// repeat a serial, which rcgen's key-derived default would.
pub(crate) fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::invalid("serial number", "random source failed"))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// What to put in a leaf certificate.
pub(crate) struct LeafSpec<'a> {
    pub(crate) cn: &'a str,
    pub(crate) orgs: &'a [&'a str],
    pub(crate) sans: &'a [San],
    pub(crate) usage: ExtendedKeyUsagePurpose,
    pub(crate) validity: Duration,
}

/// Signs a leaf certificate for `key`, returning it as PEM.
pub(crate) fn issue(
    issuer: &Issuer<'_, KeyPair>,
    key: &KeyPair,
    spec: &LeafSpec<'_>,
    now: i64,
) -> Result<String> {
    if spec.orgs.len() > 2 {
        return Err(Error::invalid(
            "certificate subject",
            "at most two organizations are supported",
        ));
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(o) = spec.orgs.first() {
        dn.push(DnType::OrganizationName, *o);
    }
    if let Some(o) = spec.orgs.get(1) {
        // Same OID (2.5.4.10), different map key in rcgen's DistinguishedName.
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 10]), *o);
    }
    dn.push(DnType::CommonName, spec.cn);
    params.distinguished_name = dn;
    params.subject_alt_names = spec.sans.iter().map(San::to_rcgen).collect::<Result<_>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![spec.usage.clone()];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    params.not_before = at(now - secs(BACKDATE))?;
    params.not_after = at(now.saturating_add(secs(spec.validity)))?;
    Ok(params.signed_by(key, issuer)?.pem())
}
