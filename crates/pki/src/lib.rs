//! Cluster PKI for `skiff server`, in the manner of k3s.
//!
//! # Layout
//! - `pki` ([`ensure`], [`Pki`]): the CA under `<data-dir>/tls/`, the API server's
//!   serving certificate, the admin client certificate, and issuing more
//!   certificates (nodes, test users) from the CA.
//! - `sans`: the names the serving certificate must carry; `issue`: signing
//!   leaf certificates.
//! - `host`: the host name and addresses the serving certificate must cover.
//! - `kubeconfig`: the admin kubeconfig, as k3s's `k3s.yaml`.
//! - `tls`: rustls server and client configurations on the ring provider.
//! - `identity`: users from verified client certificates.
//! - `tokenfile`: upstream's static token file (`--token-auth-file`).

mod error;
mod fsutil;
mod host;
mod identity;
mod issue;
mod kubeconfig;
mod pki;
mod sans;
mod tls;
mod tokenfile;

pub use error::{Error, Result};
pub use host::host_identity;
pub use identity::{
    identity_from_cert, UserInfo, ANONYMOUS_USER, AUTHENTICATED_GROUP, UNAUTHENTICATED_GROUP,
};
pub use kubeconfig::{render_kubeconfig, write_kubeconfig};
pub use pki::{
    ensure, Pki, PkiOptions, ADMIN_CERT_FILE, ADMIN_GROUP, ADMIN_KEY_FILE, ADMIN_USER,
    CA_CERT_FILE, CA_KEY_FILE, CA_VALIDITY, KUBERNETES_SERVICE_IP, LEAF_VALIDITY, SERVER_CERT_FILE,
    SERVER_KEY_FILE,
};
pub use tls::{client_tls_config, server_tls_config, ALPN_PROTOCOLS};
pub use tokenfile::TokenFile;

#[cfg(test)]
mod tests;
