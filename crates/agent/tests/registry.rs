//! Image pulls from a real registry: Debian's `docker-registry` on loopback (one open, one behind
//! htpasswd basic auth), fed by a small OCI distribution push client, and the agent pulling
//! through CRI `PullImage` with `imagePullPolicy: Always`, with and without `imagePullSecrets`.
//! Skipped unless root with containerd, runc, the CNI plugins, busybox-static and docker-registry
//! installed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use sha2::{Digest, Sha256};
use skiff_agent::image::{build_archive, ImageConfig, LayerSource};

const NODE: &str = "registry-node";
const USER: &str = "skiff";
const PASSWORD: &str = "s3cret";
/// `htpasswd -nbB -C 5 skiff s3cret` (the registry accepts only bcrypt).
const HTPASSWD: &str = "skiff:$2y$05$zWYZFiHZJCWMVs.FHIfwneTVJV/3GppqFTYWp/d2M967GhDz0PrXO\n";

fn prerequisites() -> bool {
    let root = rustix::process::geteuid().is_root();
    let missing: Vec<&str> = [
        "/usr/bin/containerd",
        "/usr/sbin/runc",
        "/usr/lib/cni/bridge",
        "/bin/busybox",
        "/usr/bin/docker-registry",
    ]
    .into_iter()
    .filter(|f| !Path::new(f).exists())
    .collect();
    if !root || !missing.is_empty() {
        eprintln!("skipped: needs root (is {root}) and {missing:?}");
        return false;
    }
    true
}

/// A `docker-registry` process on a loopback port, stopped by PID on drop.
struct Registry {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(htpasswd: Option<&str>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n  secret: skiff-registry-test\n",
            dir.path().join("storage").display()
        );
        if let Some(h) = htpasswd {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, h).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = std::process::Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let r = Registry {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok((status, _, _)) = http(addr, "GET", "/v2/", &[], b"") {
                if status == 200 || status == 401 {
                    return r;
                }
            }
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange (`Connection: close`): status, lower-cased headers and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<(u16, HashMap<String, String>, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&resp[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, resp[end + 4..].to_vec()))
}

/// Pushes an OCI image-layout archive's image to `repo:tag` (OCI distribution spec: monolithic
/// blob uploads, then the manifest).
fn push(addr: SocketAddr, repo: &str, tag: &str, archive: &[u8], auth: Option<&str>) {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut ar = tar::Archive::new(archive);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(path, data);
    }
    let blob = |digest: &str| -> Vec<u8> {
        files[&format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap())].clone()
    };
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let manifest_bytes = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let mut auth_header: Vec<(&str, String)> = Vec::new();
    if let Some(a) = auth {
        auth_header.push((
            "Authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(a)
            ),
        ));
    }
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    for l in manifest["layers"].as_array().unwrap() {
        digests.push(l["digest"].as_str().unwrap().to_string());
    }
    for d in digests {
        let data = blob(&d);
        assert_eq!(format!("sha256:{:x}", Sha256::digest(&data)), d);
        let (status, headers, body) = http(
            addr,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &auth_header,
            b"",
        )
        .unwrap();
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
        let location = &headers["location"];
        let path = match location.find("/v2/") {
            Some(i) => &location[i..],
            None => location.as_str(),
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut h = auth_header.clone();
        h.push(("Content-Type", "application/octet-stream".into()));
        let (status, _, body) =
            http(addr, "PUT", &format!("{path}{sep}digest={d}"), &h, &data).unwrap();
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    }
    let mut h = auth_header.clone();
    h.push((
        "Content-Type",
        manifest["mediaType"].as_str().unwrap().to_string(),
    ));
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &h,
        &manifest_bytes,
    )
    .unwrap();
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
}

async fn api_server() -> kube::Client {
    let addr = skiff_apiserver::serve_for_tests().await;
    kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap())).unwrap()
}

async fn wait<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    t: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + t;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod(name: &str, image: &str, secret: Option<&str>) -> Pod {
    let mut v = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1, "containers": [
            {"name": "c", "image": image, "imagePullPolicy": "Always", "command": ["sleep", "3600"]}]}
    });
    if let Some(s) = secret {
        v["spec"]["imagePullSecrets"] = serde_json::json!([{"name": s}]);
    }
    serde_json::from_value(v).unwrap()
}

fn waiting_reason(p: &Pod) -> Option<String> {
    p.status.as_ref()?.container_statuses.as_ref()?[0]
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_from_registries_with_and_without_credentials() {
    if !prerequisites() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The image `skiff images build` would make from a busybox root filesystem.
    let rootfs = tmp.path().join("rootfs/bin");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("busybox")).unwrap();
    for a in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join(a)).unwrap();
    }
    let mut archive = Vec::new();
    build_archive(
        &LayerSource::Rootfs(&tmp.path().join("rootfs")),
        "test/busybox:1",
        &ImageConfig::default(),
        &mut archive,
    )
    .unwrap();
    let open = Registry::start(None);
    let locked = Registry::start(Some(HTPASSWD));
    push(open.addr, "test/busybox", "1", &archive, None);
    // Without credentials the locked registry refuses even to start an upload.
    let (status, _, _) = http(
        locked.addr,
        "POST",
        "/v2/test/busybox/blobs/uploads/",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(status, 401);
    push(
        locked.addr,
        "test/busybox",
        "2",
        &archive,
        Some(&format!("{USER}:{PASSWORD}")),
    );

    let data = tmp.path().join("data");
    let client = api_server().await;
    let mut cfg = skiff_agent::AgentConfig::new(data.clone());
    cfg.node_name = NODE.into();
    cfg.pod_cidr = "10.88.42.0/24".into();
    cfg.bridge_name = "skt42".into();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(skiff_agent::run(cfg, client.clone(), async move {
        let _ = stop_rx.await;
    }));
    let nodes: Api<Node> = Api::all(client.clone());
    wait("node", Duration::from_secs(30), || async {
        nodes.get_opt(NODE).await.ok().flatten()
    })
    .await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let config = serde_json::json!({"auths": {locked.addr.to_string(): {
        "username": USER, "password": PASSWORD, "auth": auth}}});
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson":
            base64::engine::general_purpose::STANDARD.encode(config.to_string())}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let locked_image = format!("{}/test/busybox:2", locked.addr);
    for p in [
        pod("open", &format!("{}/test/busybox:1", open.addr), None),
        pod("authed", &locked_image, Some("regcred")),
        pod("denied", &locked_image, None),
    ] {
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    for name in ["open", "authed"] {
        wait(
            &format!("pod {name} running"),
            Duration::from_secs(60),
            || async {
                let p = pods.get(name).await.ok()?;
                (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(())
            },
        )
        .await;
    }
    let reason = wait(
        "pull failure without the secret",
        Duration::from_secs(60),
        || async {
            let p = pods.get("denied").await.ok()?;
            waiting_reason(&p).filter(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
        },
    )
    .await;
    eprintln!("denied pod waits with {reason}");
    let denied = pods.get("denied").await.unwrap();
    assert_eq!(
        denied.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );

    for name in ["open", "authed", "denied"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    wait("pods deleted", Duration::from_secs(30), || async {
        pods.list(&Default::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    let _ = stop_tx.send(());
    agent.await.unwrap().unwrap();
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "skt42"])
        .status();
}
