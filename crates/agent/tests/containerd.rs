//! The agent library against an in-process API server and a real containerd (needs root,
//! containerd, runc, the CNI plugins and busybox-static; fails loudly without them).

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use skiff_agent::image::{build_archive, ImageConfig, LayerSource};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_runs_and_is_deleted() {
    for f in [
        "/usr/bin/containerd",
        "/usr/sbin/runc",
        "/usr/lib/cni/bridge",
        "/bin/busybox",
    ] {
        assert!(Path::new(f).exists(), "this test needs {f}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    let rootfs = tmp.path().join("rootfs/bin");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("busybox")).unwrap();
    for a in ["sh", "sleep", "echo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join(a)).unwrap();
    }
    std::fs::create_dir_all(data.join("agent/images")).unwrap();
    let mut f = std::fs::File::create(data.join("agent/images/bb.tar")).unwrap();
    build_archive(
        &LayerSource::Rootfs(&tmp.path().join("rootfs")),
        "bb:1",
        &ImageConfig::default(),
        &mut f,
    )
    .unwrap();
    drop(f);

    let client = api_server().await;
    let mut cfg = skiff_agent::AgentConfig::new(data.clone());
    cfg.node_name = "lib-node".into();
    cfg.pod_cidr = "10.88.23.0/24".into();
    cfg.bridge_name = "skt23".into();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(skiff_agent::run(cfg, client.clone(), async move {
        let _ = stop_rx.await;
    }));
    let nodes: Api<Node> = Api::all(client.clone());
    wait("node", Duration::from_secs(30), || async {
        nodes.get_opt("lib-node").await.ok().flatten()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"nodeName": "lib-node", "terminationGracePeriodSeconds": 2, "containers": [
            {"name": "c", "image": "bb:1", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let t = Instant::now();
    wait("running", Duration::from_secs(30), || async {
        let p = pods.get("p").await.ok()?;
        let s = p.status?;
        (s.phase.as_deref() == Some("Running") && s.pod_ip.is_some()).then_some(())
    })
    .await;
    eprintln!("running after {:?}", t.elapsed());
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    wait("deleted", Duration::from_secs(20), || async {
        pods.get_opt("p").await.ok()?.is_none().then_some(())
    })
    .await;
    let _ = stop_tx.send(());
    agent.await.unwrap().unwrap();
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "skt23"])
        .status();
}
