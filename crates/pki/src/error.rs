//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Errors of the PKI crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read, written or created.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`read`, `write`, `create directory`, …).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A stored certificate or key could not be parsed.
    #[error("parse {path}: {reason}")]
    Parse {
        /// The file that failed to parse.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// PEM or DER given by a caller could not be parsed.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being parsed (`CA certificate`, `client key`, …).
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The CA certificate exists but its private key is missing.
    #[error(
        "CA certificate {cert} exists but its key {key} is missing; refusing to replace the CA"
    )]
    CaKeyMissing {
        /// Path of the CA certificate.
        cert: PathBuf,
        /// Path of the missing key.
        key: PathBuf,
    },
    /// The CA key does not belong to the CA certificate.
    #[error("CA key {key} does not match CA certificate {cert}")]
    CaKeyMismatch {
        /// Path of the CA certificate.
        cert: PathBuf,
        /// Path of the CA key.
        key: PathBuf,
    },
    /// A subject alternative name is neither an IP address nor a valid DNS name.
    #[error("invalid subject alternative name {0:?}")]
    InvalidSan(String),
    /// A certificate could not be generated or signed.
    #[error("generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The TLS configuration could not be built.
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A static token file is malformed.
    #[error("{0}")]
    TokenFile(String),
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parse(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Error::Parse {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl ToString) -> Self {
        Error::Invalid {
            what,
            reason: reason.to_string(),
        }
    }
}
