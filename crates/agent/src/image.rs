//! Images without a registry: OCI image-layout archives built from a directory or a single
//! binary, and their import into containerd.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The sandbox ("pause") image the agent builds from its embedded pause program.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// The static pause program built by this crate's build script.
pub static PAUSE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// What goes into the image's only layer.
pub enum LayerSource<'a> {
    /// Every file under a directory, which becomes the root filesystem.
    Rootfs(&'a Path),
    /// One executable, stored as `/<name>` with mode 0755.
    Binary { name: &'a str, contents: &'a [u8] },
}

/// The runtime configuration recorded in the image config.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
}

/// Expands a short image reference the way CRI and Docker do: `busybox` becomes
/// `docker.io/library/busybox:latest`, `me/app:1` becomes `docker.io/me/app:1`.
pub fn normalize_reference(reference: &str) -> String {
    let (name, suffix) = match reference.find('@') {
        Some(i) => (&reference[..i], &reference[i..]),
        None => {
            let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
            match reference[last_slash..].find(':') {
                Some(i) => reference.split_at(last_slash + i),
                None => (reference, ":latest"),
            }
        }
    };
    let first = name.split('/').next().unwrap_or("");
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if has_domain {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    format!("{full}{suffix}")
}

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// Builds the uncompressed layer tar: deterministic headers (owner root, fixed mtime) so that
/// the same input always yields the same digests.
fn layer_tar(source: &LayerSource) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    match source {
        LayerSource::Rootfs(dir) => {
            if !dir.is_dir() {
                bail!("{} is not a directory", dir.display());
            }
            builder
                .append_dir_all(".", dir)
                .with_context(|| format!("archive {}", dir.display()))?;
        }
        LayerSource::Binary { name, contents } => {
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(0o755);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, name, *contents)?;
        }
    }
    Ok(builder.into_inner()?)
}

/// Writes an OCI image-layout archive holding one image named `reference` (normalized) to `out`.
/// Returns the image ID (the config digest), which is what CRI reports for it.
pub fn build_archive(
    source: &LayerSource,
    reference: &str,
    config: &ImageConfig,
    out: &mut impl Write,
) -> Result<String> {
    let full = normalize_reference(reference);
    let tag = full
        .rsplit_once(':')
        .filter(|(n, _)| !n.contains('@'))
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| "latest".into());
    let layer = layer_tar(source)?;
    let diff_id = format!("sha256:{}", sha256_hex(&layer));
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer)?;
    let layer_gz = gz.finish()?;
    let layer_digest = sha256_hex(&layer_gz);

    let mut env = config.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    let mut cfg = serde_json::Map::new();
    cfg.insert("Env".into(), json!(env));
    if !config.entrypoint.is_empty() {
        cfg.insert("Entrypoint".into(), json!(config.entrypoint));
    }
    if !config.cmd.is_empty() {
        cfg.insert("Cmd".into(), json!(config.cmd));
    }
    if let Some(wd) = &config.working_dir {
        cfg.insert("WorkingDir".into(), json!(wd));
    }
    let image_config = serde_json::to_vec(&json!({
        "architecture": go_arch(),
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "skiff images build"}],
    }))?;
    let config_digest = sha256_hex(&image_config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": image_config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer_gz.len(),
        }],
    }))?;
    let manifest_digest = sha256_hex(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": full,
                "org.opencontainers.image.ref.name": tag,
            },
            "platform": {"architecture": go_arch(), "os": "linux"},
        }],
    }))?;

    let mut archive = tar::Builder::new(out);
    let mut add = |path: &str, data: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        archive.append_data(&mut header, path, data)?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    add(&format!("blobs/sha256/{manifest_digest}"), &manifest)?;
    add(&format!("blobs/sha256/{config_digest}"), &image_config)?;
    add(&format!("blobs/sha256/{layer_digest}"), &layer_gz)?;
    archive.finish()?;
    Ok(format!("sha256:{config_digest}"))
}

/// The image architecture name (Go's GOARCH spelling) of this machine.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Registry credentials found in an image pull secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryCredentials {
    pub username: String,
    pub password: String,
}

/// The `(location, credentials)` entries of a pull secret's data: `.dockerconfigjson`
/// (`{"auths": {...}}`) or the legacy `.dockercfg` (the map itself). An entry's `auth`
/// (base64 `user:password`) fills in a missing username and password, as upstream decodes it.
pub fn pull_secret_entries(
    data: &std::collections::BTreeMap<String, k8s_openapi::ByteString>,
) -> Vec<(String, RegistryCredentials)> {
    use base64::Engine as _;
    let auths = if let Some(d) = data.get(".dockerconfigjson") {
        serde_json::from_slice::<serde_json::Value>(&d.0)
            .ok()
            .and_then(|v| v.get("auths").cloned())
    } else if let Some(d) = data.get(".dockercfg") {
        serde_json::from_slice::<serde_json::Value>(&d.0).ok()
    } else {
        None
    };
    let Some(serde_json::Value::Object(auths)) = auths else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (location, entry) in auths {
        let field = |k: &str| {
            entry
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let mut creds = RegistryCredentials {
            username: field("username"),
            password: field("password"),
        };
        let auth = field("auth");
        if !auth.is_empty() && creds.username.is_empty() && creds.password.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            if let Some((u, p)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                creds.username = u.to_string();
                creds.password = p.to_string();
            }
        }
        out.push((location, creds));
    }
    out
}

/// Splits a location or image name (scheme optional) into host (with port) and path.
fn host_and_path(s: &str) -> (&str, &str) {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    match s.find('/') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

/// Shell-style match of one host label against a pattern label (`*` and `?`).
fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    match (pattern.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], s) || (!s.is_empty() && glob_match(pattern, &s[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => glob_match(&pattern[1..], &s[1..]),
        _ => false,
    }
}

/// The credentials that apply to `image`, most specific location first, with upstream's
/// keyring rules: the location's host matches the image's (same number of dot-separated labels,
/// each glob-matched, same port) and the location's path is a prefix of the image's repository
/// path; `/v1/` and `/v2/` paths stand for the whole registry, and Docker Hub's names
/// (`index.docker.io`, `registry-1.docker.io`, `docker.io`) match `docker.io` images.
pub fn credentials_for(
    image: &str,
    entries: &[(String, RegistryCredentials)],
) -> Vec<RegistryCredentials> {
    let full = normalize_reference(image);
    let repo = match full.find('@') {
        Some(i) => &full[..i],
        None => {
            let last_slash = full.rfind('/').map_or(0, |i| i + 1);
            match full[last_slash..].rfind(':') {
                Some(i) => &full[..last_slash + i],
                None => &full[..],
            }
        }
    };
    let (image_host, image_path) = host_and_path(repo);
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    let mut matched: Vec<(&str, &RegistryCredentials)> = Vec::new();
    for (location, creds) in entries {
        let (host, mut path) = host_and_path(location);
        if matches!(path.trim_end_matches('/'), "/v1" | "/v2") {
            path = "";
        }
        let path = path.trim_end_matches('/');
        let host_ok = if hub(host) || hub(image_host) {
            hub(host) && hub(image_host)
        } else {
            let (hn, hp) = host.rsplit_once(':').unwrap_or((host, ""));
            let (in_, ip) = image_host.rsplit_once(':').unwrap_or((image_host, ""));
            let hl: Vec<&str> = hn.split('.').collect();
            let il: Vec<&str> = in_.split('.').collect();
            hp == ip
                && hl.len() == il.len()
                && hl
                    .iter()
                    .zip(&il)
                    .all(|(p, l)| glob_match(p.as_bytes(), l.as_bytes()))
        };
        let path_ok =
            path.is_empty() || image_path == path || image_path.starts_with(&format!("{path}/"));
        if host_ok && path_ok {
            matched.push((location.as_str(), creds));
        }
    }
    // Longer (more specific) locations first, as upstream's keyring orders its index.
    matched.sort_by(|a, b| b.0.cmp(a.0));
    let mut out: Vec<RegistryCredentials> = Vec::new();
    for (_, c) in matched {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

/// Imports an image archive into containerd's `k8s.io` namespace (where CRI looks) through the
/// `ctr` tool shipped with containerd.
pub async fn import_archive(containerd_socket: &Path, archive: &Path) -> Result<()> {
    let out = tokio::process::Command::new("ctr")
        .arg("--address")
        .arg(containerd_socket)
        .args(["-n", "k8s.io", "images", "import"])
        .arg(archive)
        .output()
        .await
        .context("run ctr (is containerd installed?)")?;
    if !out.status.success() {
        bail!(
            "importing {}: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Imports the agent's own pause image and every `*.tar` in `<agent_dir>/images/`.
pub async fn import_local_images(containerd_socket: &Path, agent_dir: &Path) -> Result<()> {
    let pause = agent_dir.join("containerd/pause.tar");
    let mut buf = Vec::new();
    build_archive(
        &LayerSource::Binary {
            name: "pause",
            contents: PAUSE_BINARY,
        },
        PAUSE_IMAGE,
        &ImageConfig {
            entrypoint: vec!["/pause".into()],
            ..Default::default()
        },
        &mut buf,
    )?;
    std::fs::write(&pause, buf)?;
    import_archive(containerd_socket, &pause).await?;
    let mut archives: Vec<_> = std::fs::read_dir(agent_dir.join("images"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    archives.sort();
    for a in archives {
        import_archive(containerd_socket, &a).await?;
        tracing::info!(archive = %a.display(), "imported image");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Read;

    #[test]
    fn normalizes_references_like_docker() {
        assert_eq!(
            normalize_reference("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_reference("busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(normalize_reference("me/app:1"), "docker.io/me/app:1");
        assert_eq!(
            normalize_reference("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(
            normalize_reference("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize_reference("quay.io/a/b@sha256:abc"),
            "quay.io/a/b@sha256:abc"
        );
    }

    fn entries(archive: &[u8]) -> HashMap<String, Vec<u8>> {
        let mut out = HashMap::new();
        let mut ar = tar::Archive::new(archive);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(path, data);
        }
        out
    }

    #[test]
    fn archive_is_a_valid_oci_layout() {
        let mut buf = Vec::new();
        let config = ImageConfig {
            entrypoint: vec!["/pause".into()],
            ..Default::default()
        };
        let id = build_archive(
            &LayerSource::Binary {
                name: "pause",
                contents: b"\x7fELF fake",
            },
            "busybox:1.36",
            &config,
            &mut buf,
        )
        .unwrap();
        let files = entries(&buf);
        assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            "1.36"
        );
        // Every blob is named by its own digest and sized as declared.
        let blob = |d: &serde_json::Value| {
            let d = d.as_str().unwrap().strip_prefix("sha256:").unwrap();
            let data = &files[&format!("blobs/sha256/{d}")];
            assert_eq!(sha256_hex(data), d);
            data.clone()
        };
        let manifest_bytes = blob(&m["digest"]);
        assert_eq!(m["size"], manifest_bytes.len());
        let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
        let config_bytes = blob(&manifest["config"]["digest"]);
        assert_eq!(id, manifest["config"]["digest"].as_str().unwrap());
        let cfg: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap();
        assert_eq!(cfg["config"]["Entrypoint"][0], "/pause");
        let layer_gz = blob(&manifest["layers"][0]["digest"]);
        let mut layer = Vec::new();
        flate2::read::GzDecoder::new(&layer_gz[..])
            .read_to_end(&mut layer)
            .unwrap();
        assert_eq!(
            cfg["rootfs"]["diff_ids"][0].as_str().unwrap(),
            format!("sha256:{}", sha256_hex(&layer))
        );
        let layer_files = entries(&layer);
        assert_eq!(layer_files["pause"], b"\x7fELF fake");
    }

    #[test]
    fn archives_are_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/x"), b"x").unwrap();
        let build = || {
            let mut buf = Vec::new();
            build_archive(
                &LayerSource::Rootfs(dir.path()),
                "x:1",
                &ImageConfig::default(),
                &mut buf,
            )
            .unwrap()
        };
        assert_eq!(build(), build());
    }

    fn secret_data(json: &str) -> std::collections::BTreeMap<String, k8s_openapi::ByteString> {
        std::collections::BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            k8s_openapi::ByteString(json.as_bytes().to_vec()),
        )])
    }

    #[test]
    fn pull_secret_entries_decode_auth() {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:w");
        let e = pull_secret_entries(&secret_data(&format!(
            r#"{{"auths": {{"r.example:5000": {{"auth": "{auth}"}}, "q.example": {{"username": "a", "password": "b"}}}}}}"#
        )));
        let m: HashMap<_, _> = e.into_iter().collect();
        assert_eq!(
            m["r.example:5000"],
            RegistryCredentials {
                username: "u".into(),
                password: "p:w".into()
            }
        );
        assert_eq!(m["q.example"].username, "a");
        let legacy = std::collections::BTreeMap::from([(
            ".dockercfg".to_string(),
            k8s_openapi::ByteString(br#"{"x.io": {"username": "l", "password": "m"}}"#.to_vec()),
        )]);
        assert_eq!(pull_secret_entries(&legacy)[0].1.username, "l");
        assert!(pull_secret_entries(&secret_data("not json")).is_empty());
    }

    #[test]
    fn credentials_match_like_upstream_keyring() {
        let c = |u: &str| RegistryCredentials {
            username: u.into(),
            password: String::new(),
        };
        let entries = vec![
            ("127.0.0.1:5000".to_string(), c("local")),
            ("https://*.example.com".to_string(), c("glob")),
            ("reg.example.com/team".to_string(), c("team")),
            ("https://index.docker.io/v1/".to_string(), c("hub")),
            ("127.0.0.1:6000".to_string(), c("other-port")),
        ];
        let users = |image: &str| -> Vec<String> {
            credentials_for(image, &entries)
                .into_iter()
                .map(|c| c.username)
                .collect()
        };
        assert_eq!(users("127.0.0.1:5000/test/busybox:1"), vec!["local"]);
        assert_eq!(users("reg.example.com/team/app:1"), vec!["team", "glob"]);
        assert_eq!(users("reg.example.com/teamx/app"), vec!["glob"]);
        assert_eq!(users("a.b.example.com/app"), Vec::<String>::new());
        assert_eq!(users("busybox"), vec!["hub"]);
        assert_eq!(users("me/app:2"), vec!["hub"]);
        assert_eq!(users("quay.io/x/y"), Vec::<String>::new());
    }

    #[test]
    fn pause_binary_is_static_elf() {
        assert_eq!(&PAUSE_BINARY[..4], b"\x7fELF");
        assert!(PAUSE_BINARY.len() < 4 << 20);
    }
}
