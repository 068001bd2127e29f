//! Bound service-account tokens: the signing key, the TokenRequest subresource
//! (`serviceaccounts/<name>/token`), authentication of the tokens as bearer tokens, the OpenID
//! discovery documents, and the part of upstream's ServiceAccount admission that mounts the
//! `kube-api-access-*` projected volume into pods.
//!
//! Tokens are ES256 JWS (upstream accepts any key type its issuer holds; k3s uses RSA). Claims
//! follow upstream's `pkg/serviceaccount`: `iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti` and
//! the private `kubernetes.io` claim naming the namespace, the service account and the object
//! the token is bound to.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde_json::{json, Value};
use sha2::Digest;
use skiff_api::registry::{self, ResourceInfo};
use skiff_pki::UserInfo;

use crate::error::{ApiError, ApiResult};
use crate::http_util::{bytes_response, Resp};
use crate::meta::{self, meta_str};
use crate::reqinfo::ResourceRequest;
use crate::{ApiServer, Ctx};

/// Upstream's default issuer (`--service-account-issuer`, as k3s sets it).
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Where the signing key lives, under the server's TLS directory.
pub const KEY_FILE: &str = "service-account.key";
/// The shortest lifetime a TokenRequest may ask for (10 minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest lifetime a TokenRequest may ask for (2^32 seconds).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// A TokenRequest's lifetime when it names none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The lifetime of the admission-added projected token; pod-bound tokens asking for exactly
/// this are issued for [`EXTENDED_EXPIRATION_SECONDS`] with a `warnafter` claim instead, so
/// that clients that never reload the file keep working (upstream's
/// `--service-account-extend-token-expiration`).
pub const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
/// The lifetime of extended tokens (one year).
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 3600;
/// Clock skew tolerated on `exp`, `nbf` and `iat` (go-jose's default leeway).
pub const LEEWAY_SECONDS: i64 = 60;
/// How long a token stays valid after the deletion timestamp of an object it names.
const DELETED_GRACE_SECONDS: i64 = 60;
/// The name prefix of the admission-added token volume.
pub const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
/// Where the admission-added token volume is mounted in every container.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The annotation of mirror pods, which admission leaves alone.
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// DER prefix of a P-256 `SubjectPublicKeyInfo` before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// An ECDSA P-256 key that signs service-account tokens.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> anyhow::Result<SigningKey> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("generating the service-account signing key failed"))?;
        SigningKey::from_pkcs8(doc.as_ref())
    }

    /// A key from its PKCS#8 DER encoding.
    pub fn from_pkcs8(der: &[u8]) -> anyhow::Result<SigningKey> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|e| anyhow::anyhow!("invalid service-account signing key: {e}"))?;
        // Upstream's key id: the unpadded base64url SHA-256 of the PKIX public key.
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&spki));
        Ok(SigningKey {
            pair,
            pkcs8: der.to_vec(),
            kid,
        })
    }

    /// Loads the PEM key at `path`, generating and writing it (mode 0600) when absent.
    pub fn load_or_create(path: &Path) -> anyhow::Result<SigningKey> {
        match std::fs::read_to_string(path) {
            Ok(pem) => {
                let b64: String = pem
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<Vec<_>>()
                    .concat();
                let der = STANDARD
                    .decode(b64.trim())
                    .map_err(|e| anyhow::anyhow!("{}: invalid PEM: {e}", path.display()))?;
                SigningKey::from_pkcs8(&der).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SigningKey::generate()?;
                write_private(path, key.to_pem().as_bytes())?;
                Ok(key)
            }
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    /// The PKCS#8 PEM encoding.
    pub fn to_pem(&self) -> String {
        let b64 = STANDARD.encode(&self.pkcs8);
        let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
            out.push('\n');
        }
        out.push_str("-----END PRIVATE KEY-----\n");
        out
    }

    /// The key id (`kid` header).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JSON Web Key.
    pub fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// Signs `claims` as a compact ES256 JWS.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("serializes")),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("serializes")),
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("ECDSA signing does not fail with a system RNG");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// Checks the signature of a compact JWS and returns its payload.
    pub fn verify_signature(&self, token: &str) -> Result<Value, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if header["alg"] != "ES256" {
            return Err(TokenError::BadSignature);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        let signed = &token[..h.len() + 1 + p.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.pair.public_key().as_ref())
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| TokenError::BadSignature)?;
        URL_SAFE_NO_PAD
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(Value::is_object)
            .ok_or(TokenError::Malformed)
    }
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

/// Why a token does not authenticate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWS this server can read.
    #[error("token is malformed")]
    Malformed,
    /// The signature does not verify with the signing key.
    #[error("invalid signature")]
    BadSignature,
    /// Another issuer's token.
    #[error("token issuer is not handled")]
    WrongIssuer,
    /// Past `exp`.
    #[error("service account token has expired")]
    Expired,
    /// Before `nbf` or `iat`.
    #[error("service account token is not yet valid")]
    NotYetValid,
    /// No audience in common with the server's.
    #[error("token audiences {0:?} is invalid for the target audiences {1:?}")]
    Audience(Vec<String>, Vec<String>),
    /// The object the token names is gone or was replaced.
    #[error("{0}")]
    Stale(String),
}

/// A reference in the `kubernetes.io` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClaimRef {
    /// Object name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Object uid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KubernetesClaim {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub serviceaccount: ClaimRef,
    /// The pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ClaimRef>,
    /// The secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ClaimRef>,
    /// The node the token (or its pod) is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ClaimRef>,
    /// When the token would have expired had its lifetime not been extended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// The object a token is bound to.
#[derive(Debug, Clone, Default)]
pub struct Bound {
    /// A pod, and the node it runs on (uid empty when the node object is missing).
    pub pod: Option<(ClaimRef, Option<ClaimRef>)>,
    /// A secret.
    pub secret: Option<ClaimRef>,
    /// A node.
    pub node: Option<ClaimRef>,
}

/// The claims of a token for service account `sa` (in `namespace`) issued at `now` (Unix
/// seconds), valid for `expiration` seconds; `warn_after` is the lifetime asked for when it
/// was extended.
#[allow(clippy::too_many_arguments)]
pub fn claims(
    issuer: &str,
    namespace: &str,
    sa: &ClaimRef,
    bound: &Bound,
    audiences: &[String],
    now: i64,
    expiration: i64,
    warn_after: Option<i64>,
) -> Value {
    let mut k = KubernetesClaim {
        namespace: namespace.to_string(),
        serviceaccount: sa.clone(),
        warnafter: warn_after.map(|w| now + w),
        ..Default::default()
    };
    if let Some((pod, node)) = &bound.pod {
        k.pod = Some(pod.clone());
        k.node = node.clone();
    } else if let Some(s) = &bound.secret {
        k.secret = Some(s.clone());
    } else if let Some(n) = &bound.node {
        k.node = Some(n.clone());
    }
    json!({
        "aud": audiences,
        "exp": now + expiration,
        "iat": now,
        "iss": issuer,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": k,
        "nbf": now,
        "sub": username(namespace, &sa.name),
    })
}

/// `system:serviceaccount:<namespace>:<name>`.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The validated claims of a token, before the objects it names are checked.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `sub`.
    pub subject: String,
    /// `jti`.
    pub id: Option<String>,
    /// The `kubernetes.io` claim.
    pub kubernetes: KubernetesClaim,
}

/// Signs and verifies the server's service-account tokens.
pub struct Issuer {
    key: RwLock<Arc<SigningKey>>,
    issuer: String,
    audiences: Vec<String>,
    mount_token: AtomicBool,
}

impl Issuer {
    /// An issuer with a fresh in-memory key (replaced by [`ApiServer::load_service_account_key`]),
    /// the default issuer URL, audiences defaulting to it, and token mounting off.
    pub fn new() -> anyhow::Result<Issuer> {
        Ok(Issuer {
            key: RwLock::new(Arc::new(SigningKey::generate()?)),
            issuer: DEFAULT_ISSUER.into(),
            audiences: vec![DEFAULT_ISSUER.into()],
            mount_token: AtomicBool::new(false),
        })
    }

    /// The current signing key.
    pub fn key(&self) -> Arc<SigningKey> {
        self.key.read().expect("key lock").clone()
    }

    /// Replaces the signing key; tokens signed with the old one stop authenticating.
    pub fn set_key(&self, key: SigningKey) {
        *self.key.write().expect("key lock") = Arc::new(key);
    }

    /// The `iss` of the server's tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audiences the API server accepts (and the default of a TokenRequest).
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Signs claims with the current key.
    pub fn sign(&self, claims: &Value) -> String {
        self.key().sign(claims)
    }

    /// Checks signature, issuer, validity window at `now` and audience.
    pub fn verify(&self, token: &str, now: i64) -> Result<Verified, TokenError> {
        let c = self.key().verify_signature(token)?;
        if c["iss"].as_str() != Some(self.issuer.as_str()) {
            return Err(TokenError::WrongIssuer);
        }
        let k: KubernetesClaim = c
            .get("kubernetes.io")
            .cloned()
            .and_then(|k| serde_json::from_value(k).ok())
            .ok_or(TokenError::Malformed)?;
        let exp = c["exp"].as_i64().ok_or(TokenError::Malformed)?;
        if now >= exp + LEEWAY_SECONDS {
            return Err(TokenError::Expired);
        }
        for field in ["nbf", "iat"] {
            if let Some(t) = c[field].as_i64() {
                if now + LEEWAY_SECONDS < t {
                    return Err(TokenError::NotYetValid);
                }
            }
        }
        let aud: Vec<String> = match &c["aud"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        if !aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(TokenError::Audience(aud, self.audiences.clone()));
        }
        let subject = c["sub"].as_str().unwrap_or_default().to_string();
        if subject != username(&k.namespace, &k.serviceaccount.name) {
            return Err(TokenError::Malformed);
        }
        Ok(Verified {
            subject,
            id: c["jti"].as_str().map(String::from),
            kubernetes: k,
        })
    }
}

/// Whether a bearer token looks like a JWS (three base64url parts); cheap pre-check.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn core(plural: &str) -> &'static ResourceInfo {
    registry::find("", "v1", plural).expect("core resources are served")
}

/// Upstream's 422 for a TokenRequest, whose message names the group-qualified kind.
fn invalid_token_request(name: &str, field: &str, message: String) -> ApiError {
    let mut e = ApiError::invalid(
        "TokenRequest",
        "authentication.k8s.io",
        name,
        &[skiff_api::Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: message.clone(),
        }],
    );
    e.message =
        format!("TokenRequest.authentication.k8s.io \"{name}\" is invalid: {field}: {message}");
    e
}

impl ApiServer {
    /// The service-account token issuer.
    pub fn service_account_issuer(&self) -> &Issuer {
        &self.satoken
    }

    /// Loads (or creates) the signing key `<tls_dir>/service-account.key`, so that tokens
    /// survive restarts. `skiff server` calls this at start through `join::enable_nodes`.
    pub fn load_service_account_key(&self, tls_dir: &Path) -> anyhow::Result<PathBuf> {
        let path = tls_dir.join(KEY_FILE);
        self.satoken.set_key(SigningKey::load_or_create(&path)?);
        Ok(path)
    }

    /// Turns on the mounting of the `kube-api-access-*` token volume into new pods (upstream's
    /// ServiceAccount admission with `MountServiceAccountToken`). Off by default: the volume
    /// needs the `kube-root-ca.crt` ConfigMap published in the pod's namespace.
    pub fn set_mount_service_account_token(&self, on: bool) {
        self.satoken.mount_token.store(on, Ordering::Relaxed);
    }

    /// POST `serviceaccounts/<name>/token`: issues a token (upstream's `TokenREST.Create`).
    pub(crate) async fn create_token(
        &self,
        rr: &ResourceRequest,
        ctx: &Ctx<'_>,
        mut req: Value,
    ) -> ApiResult<Resp> {
        let ns = rr.namespace.clone().unwrap_or_default();
        let name = rr.name.clone().unwrap_or_default();
        if !req.is_object() {
            return Err(ApiError::bad_request(
                "the object provided is unrecognized (must be of type TokenRequest)",
            ));
        }
        let kind = req["kind"].as_str().unwrap_or("");
        let av = req["apiVersion"].as_str().unwrap_or("");
        if (!kind.is_empty() && kind != "TokenRequest")
            || (!av.is_empty() && av != "authentication.k8s.io/v1")
        {
            return Err(ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type TokenRequest): no kind \"{kind}\" is registered for version \"{av}\""
            )));
        }
        if let Some(n) = meta_str(&req, "name").filter(|n| !n.is_empty() && *n != name) {
            let msg =
                format!("Invalid value: \"{n}\": must match the service account name if specified");
            return Err(invalid_token_request(&name, "metadata.name", msg));
        }
        if let Some(n) = meta_str(&req, "namespace").filter(|n| !n.is_empty() && *n != ns) {
            let msg = format!(
                "Invalid value: \"{n}\": must match the service account namespace if specified"
            );
            return Err(invalid_token_request(&name, "metadata.namespace", msg));
        }
        let sar = core("serviceaccounts");
        let (sa, _) = self
            .read(&sar.key(Some(&ns), &name))
            .await?
            .ok_or_else(|| ApiError::not_found(sar, &name))?;
        let spec = req["spec"].clone();
        let mut audiences: Vec<String> = spec["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if audiences.is_empty() {
            audiences = self.satoken.audiences.clone();
        }
        let expiration = match &spec["expirationSeconds"] {
            Value::Null => DEFAULT_EXPIRATION_SECONDS,
            v => v.as_i64().ok_or_else(|| {
                ApiError::bad_request("spec.expirationSeconds: expected an integer")
            })?,
        };
        if expiration < MIN_EXPIRATION_SECONDS {
            return Err(invalid_token_request(
                "",
                "spec.expirationSeconds",
                format!(
                    "Invalid value: {expiration}: may not specify a duration less than 10 minutes"
                ),
            ));
        }
        if expiration > MAX_EXPIRATION_SECONDS {
            return Err(invalid_token_request(
                "",
                "spec.expirationSeconds",
                format!("Too long: may not be more than {MAX_EXPIRATION_SECONDS} bytes: may not specify a duration larger than 2^32 seconds"),
            ));
        }

        let mut bound = Bound::default();
        let bound_ref = spec["boundObjectRef"].clone();
        if bound_ref.is_object() {
            let ref_av = bound_ref["apiVersion"].as_str().unwrap_or("");
            let ref_kind = bound_ref["kind"].as_str().unwrap_or("");
            let ref_name = bound_ref["name"].as_str().unwrap_or("").to_string();
            let ref_uid = bound_ref["uid"].as_str().unwrap_or("");
            let group = ref_av.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
            let plural = match (group, ref_kind) {
                ("", "Pod") => "pods",
                ("", "Secret") => "secrets",
                ("", "Node") => "nodes",
                _ => {
                    let version = ref_av.rsplit('/').next().unwrap_or("");
                    let gvk = if group.is_empty() {
                        format!("/{version}, Kind={ref_kind}")
                    } else {
                        format!("{group}/{version}, Kind={ref_kind}")
                    };
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token to object of type {gvk}"
                    )));
                }
            };
            let r = core(plural);
            let obj_ns = r.namespaced.then_some(ns.as_str());
            let (obj, _) = self
                .read(&r.key(obj_ns, &ref_name))
                .await?
                .ok_or_else(|| ApiError::not_found(r, &ref_name))?;
            let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
            let this = ClaimRef {
                name: ref_name.clone(),
                uid: uid.clone(),
            };
            match ref_kind {
                "Pod" => {
                    let pod_sa = obj["spec"]["serviceAccountName"].as_str().unwrap_or("");
                    if pod_sa != name {
                        return Err(ApiError::bad_request(format!(
                            "cannot bind token for serviceaccount {name:?} to pod running with serviceaccount {pod_sa:?}"
                        )));
                    }
                    let node = match obj["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                        Some(node) => {
                            let nr = core("nodes");
                            let uid = self
                                .read(&nr.key(None, node))
                                .await?
                                .and_then(|(n, _)| meta_str(&n, "uid").map(String::from))
                                .unwrap_or_default();
                            Some(ClaimRef {
                                name: node.to_string(),
                                uid,
                            })
                        }
                        None => None,
                    };
                    bound.pod = Some((this, node));
                }
                "Secret" => bound.secret = Some(this),
                _ => bound.node = Some(this),
            }
            if !ref_uid.is_empty() && ref_uid != uid {
                let mut e = ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {ref_kind} {ref_name:?}: the UID in the bound object reference ({ref_uid}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                );
                e.details = Some(json!({"name": ref_name, "kind": ref_kind}));
                return Err(e);
            }
        }

        let (mut lifetime, mut warn_after) = (expiration, None);
        if bound.pod.is_some()
            && expiration == WARN_ONLY_EXPIRATION_SECONDS
            && audiences.iter().all(|a| self.satoken.audiences.contains(a))
        {
            warn_after = Some(expiration);
            lifetime = EXTENDED_EXPIRATION_SECONDS;
        }
        let sa_ref = ClaimRef {
            name: name.clone(),
            uid: meta_str(&sa, "uid").unwrap_or_default().to_string(),
        };
        let now = unix_now();
        let token = self.satoken.sign(&claims(
            &self.satoken.issuer,
            &ns,
            &sa_ref,
            &bound,
            &audiences,
            now,
            lifetime,
            warn_after,
        ));
        let mut out_spec = json!({"audiences": audiences, "expirationSeconds": expiration});
        if bound_ref.is_object() {
            out_spec["boundObjectRef"] = bound_ref;
        }
        req = json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": rfc3339(now)},
            "spec": out_spec,
            "status": {"token": token, "expirationTimestamp": rfc3339(now + expiration)},
        });
        self.render_object(sar, req, ctx, 201)
    }

    /// Authenticates a bearer token issued by [`ApiServer::create_token`]: signature, validity
    /// window, audience, and that the service account and the bound object still exist with
    /// the uids the token names. `None` when it does not authenticate.
    pub(crate) async fn authenticate_service_account(&self, token: &str) -> Option<UserInfo> {
        if !looks_like_jwt(token) {
            return None;
        }
        match self.check_service_account_token(token).await {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::debug!(error = %e, "service-account token rejected");
                None
            }
        }
    }

    async fn check_service_account_token(&self, token: &str) -> Result<UserInfo, TokenError> {
        let now = unix_now();
        let v = self.satoken.verify(token, now)?;
        let k = &v.kubernetes;
        let ns = k.namespace.as_str();
        self.check_claim_ref("serviceaccounts", Some(ns), &k.serviceaccount, now)
            .await?;
        if let Some(p) = &k.pod {
            self.check_claim_ref("pods", Some(ns), p, now).await?;
        } else if let Some(s) = &k.secret {
            self.check_claim_ref("secrets", Some(ns), s, now).await?;
        } else if let Some(n) = &k.node {
            self.check_claim_ref("nodes", None, n, now).await?;
        }
        Ok(UserInfo {
            name: v.subject,
            uid: k.serviceaccount.uid.clone(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        })
    }

    /// Whether an object a token names still exists with the same uid, and was not deleted
    /// more than a minute ago (upstream's grace for objects awaiting removal).
    async fn check_claim_ref(
        &self,
        plural: &str,
        ns: Option<&str>,
        claim: &ClaimRef,
        now: i64,
    ) -> Result<(), TokenError> {
        let r = core(plural);
        let what = match ns {
            Some(ns) => format!("{} {ns}/{}", r.singular, claim.name),
            None => format!("{} {}", r.singular, claim.name),
        };
        let obj = self
            .read(&r.key(ns, &claim.name))
            .await
            .map_err(|e| TokenError::Stale(format!("looking up {what}: {}", e.message)))?
            .map(|(v, _)| v)
            .ok_or_else(|| TokenError::Stale(format!("{what} has been deleted")))?;
        let uid = meta_str(&obj, "uid").unwrap_or_default();
        if uid != claim.uid {
            return Err(TokenError::Stale(format!(
                "{what}: uid ({uid}) does not match claim ({})",
                claim.uid
            )));
        }
        if let Some(ts) = meta_str(&obj, "deletionTimestamp") {
            let deleted = chrono::DateTime::parse_from_rfc3339(ts)
                .map(|t| t.timestamp())
                .unwrap_or(now);
            if deleted + DELETED_GRACE_SECONDS < now {
                return Err(TokenError::Stale(format!("{what} is being deleted")));
            }
        }
        Ok(())
    }

    /// `/.well-known/openid-configuration` and `/openid/v1/jwks`; `None` for other paths.
    pub(crate) fn openid_endpoint(&self, path: &str) -> Option<Resp> {
        let mut resp = match path {
            "/.well-known/openid-configuration" => {
                let doc = json!({
                    "issuer": self.satoken.issuer,
                    "jwks_uri": format!("https://{}/openid/v1/jwks", self.opts.server_address),
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["ES256"],
                });
                bytes_response(
                    200,
                    "application/json",
                    serde_json::to_vec(&doc).expect("serializes"),
                )
            }
            "/openid/v1/jwks" => {
                let doc = json!({"keys": [self.satoken.key().jwk()]});
                bytes_response(
                    200,
                    "application/jwk-set+json",
                    serde_json::to_vec(&doc).expect("serializes"),
                )
            }
            _ => return None,
        };
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("public, max-age=3600"),
        );
        Some(resp)
    }

    /// Upstream's ServiceAccount admission on pod create: copies the service account's
    /// `imagePullSecrets` into pods naming none and, when token mounting is on, adds the
    /// `kube-api-access-*` projected volume and mounts it read-only in every (init) container
    /// unless `automountServiceAccountToken` is false on the pod or the service account.
    ///
    /// Upstream rejects pods whose service account does not exist; here such pods are admitted
    /// without the volume, so that clusters without a ServiceAccount controller keep working.
    pub(crate) async fn admit_pod_service_account(&self, pod: &mut Value) -> ApiResult<()> {
        if pod["metadata"]["annotations"]
            .get(MIRROR_POD_ANNOTATION)
            .is_some()
        {
            return Ok(());
        }
        let ns = meta_str(pod, "namespace").unwrap_or_default().to_string();
        let sa_name = pod["spec"]["serviceAccountName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        let Some(sa) = self
            .cached_or_read(&core("serviceaccounts").key(Some(&ns), &sa_name))
            .await?
        else {
            return Ok(());
        };
        if self.satoken.mount_token.load(Ordering::Relaxed) && should_automount(&sa, pod) {
            mount_token_volume(pod);
        }
        let has_pull_secrets = pod["spec"]["imagePullSecrets"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        if !has_pull_secrets {
            if let Some(secrets) = sa["imagePullSecrets"].as_array().filter(|a| !a.is_empty()) {
                let refs: Vec<Value> = secrets
                    .iter()
                    .map(|s| json!({"name": s["name"].clone()}))
                    .collect();
                pod["spec"]["imagePullSecrets"] = json!(refs);
            }
        }
        Ok(())
    }
}

impl ApiServer {
    /// An object from the watch cache, or from the store when the cache does not have it
    /// (yet): admission must not miss an object created just before, as upstream's live
    /// lookup after an informer miss.
    pub(crate) async fn cached_or_read(&self, key: &str) -> ApiResult<Option<Value>> {
        match self.cache.get(key) {
            Some(o) => serde_json::from_slice(&o.bytes)
                .map(Some)
                .map_err(|e| ApiError::internal(format!("corrupt cached object: {e}"))),
            None => Ok(self.read(key).await?.map(|(v, _)| v)),
        }
    }
}

fn should_automount(sa: &Value, pod: &Value) -> bool {
    if let Some(b) = pod["spec"]["automountServiceAccountToken"].as_bool() {
        return b;
    }
    sa["automountServiceAccountToken"].as_bool().unwrap_or(true)
}

/// The projected source of the admission-added token volume.
pub fn token_volume_source() -> Value {
    json!({
        "defaultMode": 0o644,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": WARN_ONLY_EXPIRATION_SECONDS, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ],
    })
}

/// Adds the token volume (reusing an existing `kube-api-access-*` one) and its mount to every
/// init and regular container without a mount at [`TOKEN_MOUNT_PATH`].
fn mount_token_volume(pod: &mut Value) {
    let spec = &mut pod["spec"];
    let existing = spec["volumes"].as_array().and_then(|vs| {
        vs.iter()
            .filter_map(|v| v["name"].as_str())
            .find(|n| n.starts_with(TOKEN_VOLUME_PREFIX))
            .map(String::from)
    });
    let name = existing
        .clone()
        .unwrap_or_else(|| meta::generate_name(TOKEN_VOLUME_PREFIX));
    let mount = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec[list].as_array_mut() else {
            continue;
        };
        for c in containers {
            let has = c["volumeMounts"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH));
            if has {
                continue;
            }
            if !c["volumeMounts"].is_array() {
                c["volumeMounts"] = json!([]);
            }
            c["volumeMounts"]
                .as_array_mut()
                .expect("array")
                .push(mount.clone());
            needed = true;
        }
    }
    if existing.is_none() && needed {
        if !spec["volumes"].is_array() {
            spec["volumes"] = json!([]);
        }
        spec["volumes"]
            .as_array_mut()
            .expect("array")
            .push(json!({"name": name, "projected": token_volume_source()}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> Issuer {
        Issuer::new().unwrap()
    }

    fn sa() -> ClaimRef {
        ClaimRef {
            name: "builder".into(),
            uid: "sa-uid".into(),
        }
    }

    fn decode_part(token: &str, i: usize) -> Value {
        let p = token.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
    }

    #[test]
    fn signs_and_verifies_with_upstream_claims() {
        let iss = issuer();
        let bound = Bound {
            pod: Some((
                ClaimRef {
                    name: "web".into(),
                    uid: "pod-uid".into(),
                },
                Some(ClaimRef {
                    name: "n1".into(),
                    uid: "node-uid".into(),
                }),
            )),
            ..Default::default()
        };
        let c = claims(
            DEFAULT_ISSUER,
            "apps",
            &sa(),
            &bound,
            &[DEFAULT_ISSUER.to_string()],
            1_000,
            3600,
            None,
        );
        let t = iss.sign(&c);
        let header = decode_part(&t, 0);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], iss.key().kid());
        let body = decode_part(&t, 1);
        assert_eq!(body["iss"], DEFAULT_ISSUER);
        assert_eq!(body["sub"], "system:serviceaccount:apps:builder");
        assert_eq!(body["aud"], json!([DEFAULT_ISSUER]));
        assert_eq!(
            (body["iat"].as_i64(), body["nbf"].as_i64()),
            (Some(1_000), Some(1_000))
        );
        assert_eq!(body["exp"], 4_600);
        assert_eq!(body["jti"].as_str().unwrap().len(), 36);
        assert_eq!(
            body["kubernetes.io"],
            json!({"namespace": "apps",
                "serviceaccount": {"name": "builder", "uid": "sa-uid"},
                "pod": {"name": "web", "uid": "pod-uid"},
                "node": {"name": "n1", "uid": "node-uid"}})
        );
        let v = iss.verify(&t, 1_010).unwrap();
        assert_eq!(v.subject, "system:serviceaccount:apps:builder");
        assert_eq!(v.kubernetes.pod.unwrap().uid, "pod-uid");
    }

    #[test]
    fn rejects_expired_early_foreign_and_tampered_tokens() {
        let iss = issuer();
        let auds = [DEFAULT_ISSUER.to_string()];
        let t = iss.sign(&claims(
            DEFAULT_ISSUER,
            "d",
            &sa(),
            &Bound::default(),
            &auds,
            1_000,
            600,
            None,
        ));
        // Leeway of one minute on both ends.
        assert!(iss.verify(&t, 1_600 + 59).is_ok());
        assert_eq!(iss.verify(&t, 1_600 + 60).unwrap_err(), TokenError::Expired);
        assert!(iss.verify(&t, 1_000 - 60).is_ok());
        assert_eq!(
            iss.verify(&t, 1_000 - 61).unwrap_err(),
            TokenError::NotYetValid
        );
        // Another key's signature.
        let other = issuer();
        assert_eq!(
            other.verify(&t, 1_001).unwrap_err(),
            TokenError::BadSignature
        );
        // A changed payload.
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let mut body = decode_part(&t, 1);
        body["sub"] = json!("system:serviceaccount:d:admin");
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).unwrap());
        assert_eq!(
            iss.verify(&parts.join("."), 1_001).unwrap_err(),
            TokenError::BadSignature
        );
        // Wrong audience, wrong issuer.
        let t = iss.sign(&claims(
            DEFAULT_ISSUER,
            "d",
            &sa(),
            &Bound::default(),
            &["vault".into()],
            1_000,
            600,
            None,
        ));
        assert!(matches!(
            iss.verify(&t, 1_001),
            Err(TokenError::Audience(..))
        ));
        let t = iss.sign(&claims(
            "https://elsewhere",
            "d",
            &sa(),
            &Bound::default(),
            &auds,
            1_000,
            600,
            None,
        ));
        assert_eq!(iss.verify(&t, 1_001).unwrap_err(), TokenError::WrongIssuer);
        assert_eq!(iss.verify("a.b", 1).unwrap_err(), TokenError::Malformed);
    }

    #[test]
    fn warn_after_and_secret_binding() {
        let bound = Bound {
            secret: Some(ClaimRef {
                name: "s".into(),
                uid: "u".into(),
            }),
            ..Default::default()
        };
        let c = claims(
            DEFAULT_ISSUER,
            "d",
            &sa(),
            &bound,
            &[],
            100,
            EXTENDED_EXPIRATION_SECONDS,
            Some(3607),
        );
        assert_eq!(c["kubernetes.io"]["warnafter"], 3707);
        assert_eq!(
            c["kubernetes.io"]["secret"],
            json!({"name": "s", "uid": "u"})
        );
        assert!(c["kubernetes.io"].get("pod").is_none());
    }

    #[test]
    fn key_persists_and_jwk_matches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls").join(KEY_FILE);
        let a = SigningKey::load_or_create(&path).unwrap();
        let b = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(a.kid(), b.kid());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let t = a.sign(&json!({"x": 1}));
        assert_eq!(b.verify_signature(&t).unwrap(), json!({"x": 1}));
        let jwk = a.jwk();
        assert_eq!(jwk["kid"], a.kid());
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert_eq!(a.kid().len(), 43);
    }

    #[test]
    fn token_volume_goes_into_every_container_once() {
        let mut pod = json!({"spec": {
            "initContainers": [{"name": "i"}],
            "containers": [
                {"name": "a"},
                {"name": "b", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]},
            ],
        }});
        mount_token_volume(&mut pod);
        let vols = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 1);
        let name = vols[0]["name"].as_str().unwrap();
        assert!(
            name.starts_with(TOKEN_VOLUME_PREFIX) && name.len() == TOKEN_VOLUME_PREFIX.len() + 5
        );
        assert_eq!(vols[0]["projected"], token_volume_source());
        assert_eq!(
            pod["spec"]["initContainers"][0]["volumeMounts"][0]["name"],
            name
        );
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"][0]["readOnly"],
            true
        );
        assert_eq!(
            pod["spec"]["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        // Idempotent.
        mount_token_volume(&mut pod);
        assert_eq!(pod["spec"]["volumes"].as_array().unwrap().len(), 1);

        let sa = json!({"automountServiceAccountToken": false});
        assert!(!should_automount(&sa, &json!({"spec": {}})));
        assert!(should_automount(
            &sa,
            &json!({"spec": {"automountServiceAccountToken": true}})
        ));
        assert!(should_automount(&json!({}), &json!({"spec": {}})));
    }
}
