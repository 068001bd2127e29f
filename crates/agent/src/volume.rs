//! Pod volumes on the host: emptyDir (disk or tmpfs), hostPath, configMap, secret, downwardAPI,
//! projected and persistentVolumeClaim (bound to a hostPath or local PV). Files of API-backed
//! volumes are written atomically through a `..data` symlink swap, as upstream's atomic writer
//! does, so they are updated in place while containers run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod,
    Secret, Volume,
};
use kube::api::Api;

use crate::env::{field_value, resource_value, Sources};

/// Relative path → (contents, mode).
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// Where the pod's directories live: `<agent>/pods/<uid>`.
pub fn pod_dir(agent_dir: &Path, uid: &str) -> PathBuf {
    agent_dir.join("pods").join(uid)
}

fn key_files(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    what: &str,
    optional: bool,
) -> Result<Files, String> {
    let mut out = Files::new();
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        out.insert(
                            it.path.clone(),
                            (v.clone(), it.mode.map_or(default_mode, |m| m as u32)),
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "configmap references non-existent {what} key: {}",
                            it.key
                        ))
                    }
                }
            }
        }
        _ => {
            for (k, v) in data {
                out.insert(k, (v, default_mode));
            }
        }
    }
    Ok(out)
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut d: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    d.extend(
        cm.binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone())),
    );
    d
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    s.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: u32,
    src: &Sources,
) -> Result<Files, String> {
    let mut out = Files::new();
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            field_value(pod, &f.field_path, src)?
        } else if let Some(r) = &it.resource_field_ref {
            let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
            let name = r.container_name.clone().unwrap_or_default();
            let c = spec
                .containers
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| format!("container {name} not found"))?;
            resource_value(
                c,
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
                src.allocatable.as_ref(),
            )?
        } else {
            String::new()
        };
        out.insert(
            it.path.clone(),
            (value.into_bytes(), it.mode.map_or(mode, |m| m as u32)),
        );
    }
    Ok(out)
}

/// What a volume needs from the API server, fetched before materializing it.
async fn get_opt<K>(api: Api<K>, name: &str) -> Result<Option<K>, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(|e| e.to_string())
}

/// Sets up (or refreshes) every volume of the pod and returns the host path of each.
/// An error is the message of a `FailedMount` event.
pub async fn setup(
    client: &kube::Client,
    pod: &Pod,
    dir: &Path,
    src: &Sources,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(out);
    };
    for v in spec.volumes.iter().flatten() {
        let path = setup_one(client, pod, &ns, v, dir, src)
            .await
            .map_err(|e| format!("MountVolume.SetUp failed for volume \"{}\" : {e}", v.name))?;
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

async fn setup_one(
    client: &kube::Client,
    pod: &Pod,
    ns: &str,
    v: &Volume,
    dir: &Path,
    src: &Sources,
) -> Result<PathBuf, String> {
    let vdir = |kind: &str| dir.join("volumes").join(kind).join(&v.name);
    let io = |e: std::io::Error| e.to_string();
    if let Some(e) = &v.empty_dir {
        let p = vdir("empty-dir");
        std::fs::create_dir_all(&p).map_err(io)?;
        if e.medium.as_deref() == Some("Memory") && !is_mount_point(&p) {
            let size = e
                .size_limit
                .as_ref()
                .and_then(|q| skiff_api::validation::parse_quantity(&q.0).ok())
                .map(|q| format!("size={}", q.nanos / 1_000_000_000))
                .unwrap_or_default();
            let data = std::ffi::CString::new(size).map_err(|e| e.to_string())?;
            rustix::mount::mount(
                "tmpfs",
                &p,
                "tmpfs",
                rustix::mount::MountFlags::empty(),
                Some(data.as_c_str()),
            )
            .map_err(|e| format!("mount tmpfs: {e}"))?;
        }
        return Ok(p);
    }
    if let Some(h) = &v.host_path {
        let p = PathBuf::from(&h.path);
        match h.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(io)?,
            "FileOrCreate" => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .map_err(io)?;
            }
            "Directory" if !p.is_dir() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a directory",
                    h.path
                ))
            }
            "File" if !p.is_file() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a file",
                    h.path
                ))
            }
            "Socket" | "CharDevice" | "BlockDevice" if !p.exists() => {
                return Err(format!(
                    "hostPath type check failed: {} does not exist",
                    h.path
                ))
            }
            _ => {}
        }
        return Ok(p);
    }
    if let Some(pvc) = &v.persistent_volume_claim {
        let claim = get_opt(
            Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns),
            &pvc.claim_name,
        )
        .await?
        .ok_or_else(|| format!("persistentvolumeclaim \"{}\" not found", pvc.claim_name))?;
        let pv_name = claim
            .spec
            .and_then(|s| s.volume_name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("persistentvolumeclaim \"{}\" is not bound", pvc.claim_name))?;
        let pv = get_opt(Api::<PersistentVolume>::all(client.clone()), &pv_name)
            .await?
            .ok_or_else(|| format!("persistentvolume \"{pv_name}\" not found"))?;
        let spec = pv.spec.unwrap_or_default();
        let p = spec
            .host_path
            .map(|h| h.path)
            .or(spec.local.map(|l| l.path))
            .ok_or_else(|| {
                format!("persistentvolume \"{pv_name}\" is neither hostPath nor local")
            })?;
        std::fs::create_dir_all(&p).map_err(io)?;
        return Ok(PathBuf::from(p));
    }
    let files = if let Some(c) = &v.config_map {
        let mode = c.default_mode.unwrap_or(0o644) as u32;
        let optional = c.optional == Some(true);
        match get_opt(Api::<ConfigMap>::namespaced(client.clone(), ns), &c.name).await? {
            Some(cm) => key_files(
                config_map_data(&cm),
                c.items.as_ref(),
                mode,
                "ConfigMap",
                optional,
            )?,
            None if optional => Files::new(),
            None => return Err(format!("configmap \"{}\" not found", c.name)),
        }
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        let optional = s.optional == Some(true);
        match get_opt(Api::<Secret>::namespaced(client.clone(), ns), &name).await? {
            Some(sec) => key_files(
                secret_data(&sec),
                s.items.as_ref(),
                mode,
                "Secret",
                optional,
            )?,
            None if optional => Files::new(),
            None => return Err(format!("secret \"{name}\" not found")),
        }
    } else if let Some(d) = &v.downward_api {
        downward_files(
            pod,
            d.items.as_deref().unwrap_or(&[]),
            d.default_mode.unwrap_or(0o644) as u32,
            src,
        )?
    } else if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        let mut files = Files::new();
        for s in p.sources.iter().flatten() {
            if let Some(c) = &s.config_map {
                let optional = c.optional == Some(true);
                match get_opt(Api::<ConfigMap>::namespaced(client.clone(), ns), &c.name).await? {
                    Some(cm) => files.extend(key_files(
                        config_map_data(&cm),
                        c.items.as_ref(),
                        mode,
                        "ConfigMap",
                        optional,
                    )?),
                    None if optional => {}
                    None => return Err(format!("configmap \"{}\" not found", c.name)),
                }
            }
            if let Some(c) = &s.secret {
                let optional = c.optional == Some(true);
                match get_opt(Api::<Secret>::namespaced(client.clone(), ns), &c.name).await? {
                    Some(sec) => files.extend(key_files(
                        secret_data(&sec),
                        c.items.as_ref(),
                        mode,
                        "Secret",
                        optional,
                    )?),
                    None if optional => {}
                    None => return Err(format!("secret \"{}\" not found", c.name)),
                }
            }
            if let Some(d) = &s.downward_api {
                files.extend(downward_files(
                    pod,
                    d.items.as_deref().unwrap_or(&[]),
                    mode,
                    src,
                )?);
            }
            if let Some(t) = &s.service_account_token {
                let token =
                    request_token(client, pod, t.audience.as_deref(), t.expiration_seconds).await?;
                files.insert(t.path.clone(), (token.into_bytes(), mode));
            }
        }
        files
    } else {
        return Err("unsupported volume type".into());
    };
    let kind = if v.config_map.is_some() {
        "configmap"
    } else if v.secret.is_some() {
        "secret"
    } else if v.downward_api.is_some() {
        "downward-api"
    } else {
        "projected"
    };
    let p = vdir(kind);
    write_atomic(&p, &files).map_err(io)?;
    Ok(p)
}

/// A token issued for a projected volume, kept until it needs refreshing.
struct CachedToken {
    token: String,
    /// `status.expirationTimestamp`, Unix seconds.
    expires: i64,
    /// `spec.expirationSeconds` as the server echoed it.
    lifetime: i64,
}

/// What identifies a token request: pod uid, namespace, service account, audience, lifetime.
type TokenKey = (String, String, String, Option<String>, Option<i64>);

/// The tokens of projected volumes, as kubelet's token manager keeps them: volume refreshes
/// (every few seconds) reuse a token until 80% of its lifetime has passed.
fn token_cache() -> &'static std::sync::Mutex<std::collections::HashMap<TokenKey, CachedToken>> {
    static CACHE: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<TokenKey, CachedToken>>,
    > = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Kubelet's refresh rule: a token is renewed once less than 20% of its lifetime (plus a jitter
/// of up to 10 s) is left, or when it is older than a day.
pub fn requires_refresh(now: i64, expires: i64, lifetime: i64, jitter: i64) -> bool {
    const MAX_TTL: i64 = 24 * 3600;
    let issued = expires - lifetime;
    now > issued + MAX_TTL - jitter || now > expires - lifetime * 20 / 100 - jitter
}

/// A service-account token through the TokenRequest API (`serviceaccounts/<name>/token`),
/// bound to the pod; reused from the cache while it is fresh.
async fn request_token(
    client: &kube::Client,
    pod: &Pod,
    audience: Option<&str>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let key: TokenKey = (
        pod.metadata.uid.clone().unwrap_or_default(),
        ns.clone(),
        sa.clone(),
        audience.map(String::from),
        expiration,
    );
    let now = chrono::Utc::now();
    let jitter = i64::from(now.timestamp_subsec_millis() % 10);
    let now = now.timestamp();
    {
        let mut cache = token_cache().lock().expect("token cache lock");
        // Expired entries are of pods long gone; drop them.
        cache.retain(|_, t| t.expires > now);
        if let Some(t) = cache.get(&key) {
            if !requires_refresh(now, t.expires, t.lifetime, jitter) {
                return Ok(t.token.clone());
            }
        }
    }
    let body = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {
            "audiences": audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
            "expirationSeconds": expiration.unwrap_or(3600),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                "name": pod.metadata.name, "uid": pod.metadata.uid},
        }
    });
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&body).map_err(|e| e.to_string())?)
    .map_err(|e| e.to_string())?;
    let v: serde_json::Value = client
        .request(req)
        .await
        .map_err(|e| format!("requesting a token for service account {ns}/{sa}: {e}"))?;
    let token = v["status"]["token"]
        .as_str()
        .map(String::from)
        .ok_or("token request returned no token")?;
    let expires = v["status"]["expirationTimestamp"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp());
    let lifetime = v["spec"]["expirationSeconds"].as_i64();
    if let (Some(expires), Some(lifetime)) = (expires, lifetime) {
        token_cache().lock().expect("token cache lock").insert(
            key,
            CachedToken {
                token: token.clone(),
                expires,
                lifetime,
            },
        );
    }
    Ok(token)
}

/// Whether `p` is a mount point (listed in /proc/self/mountinfo).
pub fn is_mount_point(p: &Path) -> bool {
    let p = p.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(&*p)))
        .unwrap_or(false)
}

/// Replaces the files under `dir` in one step: the new set goes to a fresh timestamped
/// directory, `..data` is atomically re-pointed to it and every top-level name is a symlink
/// through `..data`. Nothing changes when the contents are the same.
pub fn write_atomic(dir: &Path, files: &Files) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let data = dir.join("..data");
    if data.exists() && read_tree(&data)? == *files {
        return Ok(());
    }
    let old = std::fs::read_link(&data).ok();
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
    let new = dir.join(&stamp);
    std::fs::create_dir_all(&new)?;
    for (path, (contents, mode)) in files {
        let f = new.join(path);
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&f, contents)?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode & 0o7777))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, &data)?;
    let top: std::collections::BTreeSet<String> = files
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p).to_string())
        .collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
        }
    }
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old {
        if old != Path::new(&stamp) {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(())
}

fn read_tree(root: &Path) -> std::io::Result<Files> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Files::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned();
                let mode = e.metadata()?.permissions().mode() & 0o7777;
                out.insert(rel, (std::fs::read(&p)?, mode));
            }
        }
    }
    Ok(out)
}

/// Unmounts tmpfs emptyDirs and removes the pod's directory.
pub fn teardown(dir: &Path) {
    let empty = dir.join("volumes/empty-dir");
    if let Ok(rd) = std::fs::read_dir(&empty) {
        for e in rd.flatten() {
            if is_mount_point(&e.path()) {
                let _ = rustix::mount::unmount(e.path(), rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_refresh_at_eighty_percent_or_a_day() {
        // Issued at 1000 for an hour: fresh until 80% (3880), renewed after.
        assert!(!requires_refresh(1_000, 4_600, 3600, 0));
        assert!(!requires_refresh(3_880, 4_600, 3600, 0));
        assert!(requires_refresh(3_881, 4_600, 3600, 0));
        // The jitter renews a little earlier.
        assert!(requires_refresh(3_875, 4_600, 3600, 6));
        // Long-lived tokens are renewed after a day.
        let year = 365 * 24 * 3600;
        assert!(!requires_refresh(1_000 + 24 * 3600, 1_000 + year, year, 0));
        assert!(requires_refresh(1_001 + 24 * 3600, 1_000 + year, year, 0));
    }

    /// A projected volume's token comes from the TokenRequest API bound to the pod, and is
    /// reused across volume refreshes.
    #[tokio::test]
    async fn projected_token_is_requested_bound_and_cached() {
        use k8s_openapi::api::core::v1::ServiceAccount;
        use kube::api::PostParams;
        let server = skiff_apiserver::ApiServer::new(skiff_apiserver::Config {
            store: std::sync::Arc::new(skiff_store::MemoryStore::new()),
            advertise_address: "127.0.0.1".parse().unwrap(),
            port: 6443,
            tokens: None,
            event_ttl: std::time::Duration::from_secs(3600),
            insecure_anonymous_admin: true,
            default_toleration_seconds: (300, 300),
        })
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(skiff_apiserver::serve(
            server.clone(),
            listener,
            None,
            std::future::pending(),
        ));
        let client =
            kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
                .unwrap();
        let sa: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "robot"}})).unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "tok"},
            "spec": {"serviceAccountName": "robot",
                "containers": [{"name": "c", "image": "busybox"}],
                "volumes": [{"name": "t", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"serviceAccountToken": {"path": "vault", "audience": "vault"}},
                ]}}]}
        }))
        .unwrap();
        let pod = Api::<Pod>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = Sources::default();
        let vols = setup(&client, &pod, dir.path(), &src).await.unwrap();
        let vdir = &vols["t"];
        let token = std::fs::read_to_string(vdir.join("token")).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                token.split('.').nth(1).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:default:robot");
        assert_eq!(
            claims["kubernetes.io"]["pod"]["uid"],
            pod.metadata.uid.clone().unwrap()
        );
        let vault = std::fs::read_to_string(vdir.join("vault")).unwrap();
        assert_ne!(vault, token);
        // The server accepts the token it issued.
        let now = chrono::Utc::now().timestamp();
        assert!(server.service_account_issuer().verify(&token, now).is_ok());
        // A refresh reuses the cached tokens: the volume is not rewritten.
        let data = std::fs::read_link(vdir.join("..data")).unwrap();
        setup(&client, &pod, dir.path(), &src).await.unwrap();
        assert_eq!(std::fs::read_to_string(vdir.join("token")).unwrap(), token);
        assert_eq!(std::fs::read_link(vdir.join("..data")).unwrap(), data);
    }

    #[test]
    fn atomic_writer_swaps_and_prunes() {
        let d = tempfile::tempdir().unwrap();
        let mut f = Files::new();
        f.insert("a".into(), (b"1".to_vec(), 0o644));
        f.insert("sub/b".into(), (b"2".to_vec(), 0o600));
        write_atomic(d.path(), &f).unwrap();
        assert_eq!(std::fs::read(d.path().join("a")).unwrap(), b"1");
        assert_eq!(std::fs::read(d.path().join("sub/b")).unwrap(), b"2");
        let first = std::fs::read_link(d.path().join("..data")).unwrap();
        // Same contents: nothing is rewritten.
        write_atomic(d.path(), &f).unwrap();
        assert_eq!(std::fs::read_link(d.path().join("..data")).unwrap(), first);
        let mut g = Files::new();
        g.insert("a".into(), (b"changed".to_vec(), 0o644));
        write_atomic(d.path(), &g).unwrap();
        assert_eq!(std::fs::read(d.path().join("a")).unwrap(), b"changed");
        assert!(std::fs::symlink_metadata(d.path().join("sub")).is_err());
        assert!(!d.path().join(first).exists());
    }
}
