//! Who a client is: from its verified certificate (upstream's x509 authenticator).

use x509_parser::certificate::X509Certificate;

/// Group of every authenticated user.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// Group of unauthenticated requests.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// User name of unauthenticated requests.
pub const ANONYMOUS_USER: &str = "system:anonymous";

/// An authenticated user, as upstream's `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Unique id; empty for certificate users.
    pub uid: String,
    /// Groups, including `system:authenticated`.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The user of requests that present no credentials.
    pub fn anonymous() -> Self {
        UserInfo {
            name: ANONYMOUS_USER.to_string(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED_GROUP.to_string()],
        }
    }

    /// The user the admin client certificate names: `system:admin` in `system:masters`.
    pub fn admin() -> Self {
        UserInfo {
            name: crate::pki::ADMIN_USER.to_string(),
            uid: String::new(),
            groups: vec![
                crate::pki::ADMIN_GROUP.to_string(),
                AUTHENTICATED_GROUP.to_string(),
            ],
        }
    }
}

/// Adds `system:authenticated` as upstream's authenticated-group adder does:
/// not for the anonymous user, nor when either all-users group is already there.
pub(crate) fn add_authenticated_group(user: &mut UserInfo) {
    if user.name == ANONYMOUS_USER
        || user
            .groups
            .iter()
            .any(|g| g == AUTHENTICATED_GROUP || g == UNAUTHENTICATED_GROUP)
    {
        return;
    }
    user.groups.push(AUTHENTICATED_GROUP.to_string());
}

/// The user a client certificate (DER) names: CN is the user name, each O a
/// group, plus `system:authenticated`. `None` when the certificate does not
/// parse or has no common name (upstream rejects those). The chain must have
/// been verified already, e.g. by the TLS client verifier.
pub fn identity_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    identity_from_x509(&cert)
}

pub(crate) fn identity_from_x509(cert: &X509Certificate<'_>) -> Option<UserInfo> {
    let subject = cert.subject();
    // Go's pkix.Name keeps the last CN and every O in order.
    let name = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .last()
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    let mut user = UserInfo {
        name,
        uid: String::new(),
        groups,
    };
    add_authenticated_group(&mut user);
    Some(user)
}
