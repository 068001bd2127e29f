//! Static pods and garbage collection against an in-process API server and a real containerd
//! (started by the agent). Skipped unless root with containerd, runc, the CNI plugins and
//! busybox-static installed.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};
use skiff_agent::gc::{
    collect_containers, collect_images, collect_log_dirs, ContainerGcPolicy, ImageGcPolicy,
    ImageTracker,
};
use skiff_agent::image::{build_archive, ImageConfig, LayerSource, PAUSE_IMAGE};
use skiff_agent::runtime::Runtime;
use skiff_agent::staticpods::{ANNOTATION_HASH, ANNOTATION_MIRROR, ANNOTATION_SOURCE};

const NODE: &str = "static-node";
const IMAGE: &str = "static-gc-bb:1";

fn prerequisites() -> bool {
    let root = rustix::process::geteuid().is_root();
    let missing: Vec<&str> = [
        "/usr/bin/containerd",
        "/usr/sbin/runc",
        "/usr/lib/cni/bridge",
        "/bin/busybox",
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

fn busybox_archive(tmp: &Path, out: &Path) {
    let rootfs = tmp.join("rootfs/bin");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("busybox")).unwrap();
    for a in ["sh", "sleep", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join(a)).unwrap();
    }
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut f = std::fs::File::create(out).unwrap();
    build_archive(
        &LayerSource::Rootfs(&tmp.join("rootfs")),
        IMAGE,
        &ImageConfig::default(),
        &mut f,
    )
    .unwrap();
}

/// The CRI containers of a pod, with their states.
async fn containers_of(rt: &Runtime, uid: &str) -> Vec<cri::Container> {
    rt.cri()
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: HashMap::from([(
                    "io.kubernetes.pod.uid".to_string(),
                    uid.to_string(),
                )]),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers
}

fn annotation(p: &Pod, k: &str) -> Option<String> {
    p.metadata.annotations.as_ref()?.get(k).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_pod_lifecycle_and_container_gc() {
    if !prerequisites() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    busybox_archive(tmp.path(), &data.join("agent/images/bb.tar"));
    let client = api_server().await;
    let mut cfg = skiff_agent::AgentConfig::new(data.clone());
    cfg.node_name = NODE.into();
    cfg.pod_cidr = "10.88.41.0/24".into();
    cfg.bridge_name = "skt41".into();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(skiff_agent::run(cfg, client.clone(), async move {
        let _ = stop_rx.await;
    }));
    let nodes: Api<Node> = Api::all(client.clone());
    let node = wait("node", Duration::from_secs(30), || async {
        nodes.get_opt(NODE).await.ok().flatten()
    })
    .await;
    let rt = Runtime::connect(
        &data
            .join("agent/containerd/containerd.sock")
            .to_string_lossy(),
    )
    .unwrap();

    // A manifest dropped into the directory runs, and its mirror appears with the real status.
    let manifest = data.join("agent/pod-manifests/web.yaml");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {{tier: static}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {IMAGE}\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n"
        ),
    )
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = format!("web-{NODE}");
    let mirror = wait("mirror pod running", Duration::from_secs(30), || async {
        let p = pods.get_opt(&name).await.ok().flatten()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    let hash = annotation(&mirror, ANNOTATION_HASH).expect("config.hash");
    assert_eq!(
        annotation(&mirror, ANNOTATION_MIRROR).as_deref(),
        Some(&*hash)
    );
    assert_eq!(
        annotation(&mirror, ANNOTATION_SOURCE).as_deref(),
        Some("file")
    );
    assert_ne!(mirror.metadata.uid.as_deref(), Some(&*hash));
    let owner = &mirror.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", NODE));
    assert_eq!(Some(&owner.uid), node.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));
    let statuses = mirror.status.unwrap().container_statuses.unwrap();
    assert!(statuses[0].state.as_ref().unwrap().running.is_some());
    // The pod runs under the static pod's UID (the hash), not the mirror's.
    let running = containers_of(&rt, &hash).await;
    assert_eq!(running.len(), 1, "{running:?}");
    let container_id = running[0].id.clone();

    // Deleting the mirror re-creates it; the pod keeps running untouched.
    pods.delete(&name, &DeleteParams::default()).await.unwrap();
    let old_uid = mirror.metadata.uid.clone();
    let again = wait("mirror re-created", Duration::from_secs(30), || async {
        let p = pods.get_opt(&name).await.ok().flatten()?;
        (p.metadata.uid != old_uid
            && p.metadata.deletion_timestamp.is_none()
            && p.status.as_ref()?.phase.as_deref() == Some("Running"))
        .then_some(p)
    })
    .await;
    assert_eq!(
        annotation(&again, ANNOTATION_MIRROR).as_deref(),
        Some(&*hash)
    );
    let now = containers_of(&rt, &hash).await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].id, container_id);
    assert_eq!(now[0].state, cri::ContainerState::ContainerRunning as i32);

    // Changing the file replaces the pod (a new hash) and its mirror.
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("'3600'", "'3601'")).unwrap();
    let replaced = wait(
        "replaced mirror running",
        Duration::from_secs(30),
        || async {
            let p = pods.get_opt(&name).await.ok().flatten()?;
            (annotation(&p, ANNOTATION_MIRROR)? != hash
                && p.status.as_ref()?.phase.as_deref() == Some("Running"))
            .then_some(p)
        },
    )
    .await;
    let old_hash = hash;
    let hash = annotation(&replaced, ANNOTATION_HASH).unwrap();
    assert_eq!(
        annotation(&replaced, ANNOTATION_MIRROR).as_deref(),
        Some(&*hash)
    );
    assert!(containers_of(&rt, &old_hash).await.is_empty());
    let new = containers_of(&rt, &hash).await;
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].state, cri::ContainerState::ContainerRunning as i32);

    // Removing the file stops the pod and removes its mirror.
    std::fs::remove_file(&manifest).unwrap();
    wait("static pod stopped", Duration::from_secs(30), || async {
        containers_of(&rt, &hash).await.is_empty().then_some(())
    })
    .await;
    wait("mirror deleted", Duration::from_secs(30), || async {
        pods.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;

    // Garbage collection: three dead instances of one container keep only the newest while the
    // pod exists, and none (nor the sandbox) once it is gone.
    let host_ns = cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let gc_uid = "gc-test-uid";
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "gc".into(),
            uid: gc_uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        labels: HashMap::from([("io.kubernetes.pod.uid".to_string(), gc_uid.to_string())]),
        log_directory: data.join("agent/logs/gc").to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: skiff_agent::pods::cgroup_parent(gc_uid),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(host_ns.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox = rt
        .cri()
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let mut ids = Vec::new();
    for attempt in 0..3 {
        let id = rt
            .cri()
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(cri::ContainerConfig {
                    metadata: Some(cri::ContainerMetadata {
                        name: "x".into(),
                        attempt,
                    }),
                    image: Some(cri::ImageSpec {
                        image: IMAGE.into(),
                        ..Default::default()
                    }),
                    command: vec!["true".into()],
                    labels: HashMap::from([(
                        "io.kubernetes.pod.uid".to_string(),
                        gc_uid.to_string(),
                    )]),
                    log_path: format!("x/{attempt}.log"),
                    linux: Some(cri::LinuxContainerConfig {
                        security_context: Some(cri::LinuxContainerSecurityContext {
                            namespace_options: Some(host_ns.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        rt.cri()
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
        ids.push(id);
    }
    wait("dead containers", Duration::from_secs(20), || async {
        let cs = containers_of(&rt, gc_uid).await;
        (cs.len() == 3
            && cs
                .iter()
                .all(|c| c.state == cri::ContainerState::ContainerExited as i32))
        .then_some(())
    })
    .await;
    let live = HashSet::from([gc_uid.to_string()]);
    let policy = ContainerGcPolicy::default();
    let got = collect_containers(&rt, &policy, async { Some(live.clone()) })
        .await
        .unwrap();
    let mut removed = got.containers.clone();
    removed.sort();
    let mut expected = vec![ids[0].clone(), ids[1].clone()];
    expected.sort();
    assert_eq!(removed, expected, "the two older dead instances go");
    assert!(got.sandboxes.is_empty(), "the pod's only sandbox stays");
    let left: Vec<String> = containers_of(&rt, gc_uid)
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, vec![ids[2].clone()]);

    rt.cri()
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await
        .unwrap();
    let got = collect_containers(&rt, &policy, async { Some(HashSet::new()) })
        .await
        .unwrap();
    assert!(got.containers.contains(&ids[2]), "{got:?}");
    assert!(got.sandboxes.contains(&sandbox), "{got:?}");
    assert!(containers_of(&rt, gc_uid).await.is_empty());

    // Log directories of pods that are gone (no sandbox, not in the API) are removed.
    let logs = data.join("agent/logs");
    std::fs::create_dir_all(logs.join("default_gone_uid-gone/c")).unwrap();
    std::fs::create_dir_all(logs.join("default_kept_uid-kept")).unwrap();
    let removed = collect_log_dirs(&rt, &logs, async {
        Some(HashSet::from(["uid-kept".to_string()]))
    })
    .await
    .unwrap();
    assert_eq!(removed, vec!["default_gone_uid-gone"]);
    assert!(logs.join("default_kept_uid-kept").exists());

    // Image collection above the threshold frees unused images but never the sandbox image.
    let status = |image: &str| {
        let rt = rt.clone();
        let image = image.to_string();
        async move {
            rt.images()
                .image_status(cri::ImageStatusRequest {
                    image: Some(cri::ImageSpec {
                        image,
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .image
        }
    };
    let busybox_id = status(IMAGE).await.expect("test image present").id;
    let mut tracker = ImageTracker::default();
    let everything = ImageGcPolicy {
        high_threshold_percent: 0,
        low_threshold_percent: 0,
        min_age: Duration::ZERO,
    };
    let removed = collect_images(&rt, &mut tracker, &everything, &[PAUSE_IMAGE], &data)
        .await
        .unwrap();
    assert!(removed.contains(&busybox_id), "{removed:?}");
    assert!(status(IMAGE).await.is_none());
    assert!(status(PAUSE_IMAGE).await.is_some());

    let _ = stop_tx.send(());
    agent.await.unwrap().unwrap();
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "skt41"])
        .status();
    skiff_agent::pods::remove_pod_cgroups(gc_uid);
}

/// Static pods do not wait for the API server: with none answering, the agent runs them; once
/// one answers, the Node registers and the mirror pod appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_pods_run_before_the_api_server_answers() {
    if !prerequisites() {
        return;
    }
    const OFFLINE_NODE: &str = "offline-node";
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    busybox_archive(tmp.path(), &data.join("agent/images/bb.tar"));
    let manifest = data.join("agent/pod-manifests/early.yaml");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: early\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {IMAGE}\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n"
        ),
    )
    .unwrap();
    // A loopback port nobody listens on yet: every request is refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();
    let mut cfg = skiff_agent::AgentConfig::new(data.clone());
    cfg.node_name = OFFLINE_NODE.into();
    cfg.pod_cidr = "10.88.42.0/24".into();
    cfg.bridge_name = "skt42".into();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(skiff_agent::run(cfg, client.clone(), async move {
        let _ = stop_rx.await;
    }));
    let socket = data.join("agent/containerd/containerd.sock");
    let rt = wait("containerd", Duration::from_secs(30), || async {
        socket
            .exists()
            .then(|| Runtime::connect(&socket.to_string_lossy()).unwrap())
    })
    .await;
    let pod_name = format!("early-{OFFLINE_NODE}");
    let running = wait(
        "static pod running without an API server",
        Duration::from_secs(30),
        || async {
            let list = rt
                .cri()
                .list_containers(cri::ListContainersRequest::default())
                .await
                .ok()?
                .into_inner()
                .containers;
            list.into_iter().find(|c| {
                c.labels.get("io.kubernetes.pod.name") == Some(&pod_name)
                    && c.state == cri::ContainerState::ContainerRunning as i32
            })
        },
    )
    .await;

    // The API server comes up on that address: the node registers and mirrors its static pod.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    skiff_apiserver::serve_for_tests_on(listener).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Registration retries back off up to 30 s.
    wait("mirror pod running", Duration::from_secs(60), || async {
        let p = pods.get_opt(&pod_name).await.ok().flatten()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    assert!(Api::<Node>::all(client.clone())
        .get_opt(OFFLINE_NODE)
        .await
        .unwrap()
        .is_some());
    // The container started while offline is the one still running.
    let uid = running.labels["io.kubernetes.pod.uid"].clone();
    let now = containers_of(&rt, &uid).await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0].id, running.id);

    std::fs::remove_file(&manifest).unwrap();
    wait("static pod stopped", Duration::from_secs(30), || async {
        containers_of(&rt, &uid)
            .await
            .iter()
            .all(|c| c.state != cri::ContainerState::ContainerRunning as i32)
            .then_some(())
    })
    .await;
    let _ = stop_tx.send(());
    agent.await.unwrap().unwrap();
}
